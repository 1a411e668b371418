// The seed's `rate_limit_logs` table as a Drizzle schema (MySQL / MariaDB), and a `LogSink` writer
// over a Drizzle database. The one module of the package that imports drizzle-orm (an optional peer
// dependency): import it from `traffic-control/drizzle` only where Drizzle is installed.
import { bigint, datetime, index, int, mysqlEnum, mysqlTable, tinyint, varchar } from 'drizzle-orm/mysql-core';
import type { MySqlDatabase } from 'drizzle-orm/mysql-core';
import { ENDPOINT_MAX_CHARS, LOG_STATUSES, type LogStatus, type LogWriter, type RateLimitLogRow } from './logs.js';

/**
 * The `rate_limit_logs` table. The same DDL, for those who create it without Drizzle, ships with
 * the Python package (`traffic_control/rate_limit_logs.sql`); the tests check both against a real
 * MariaDB.
 *
 * `timestamp` is a `datetime(3)` holding UTC: Drizzle writes and reads a `Date` as UTC text for
 * `datetime` and `timestamp` columns alike, and a `timestamp` column would have the server
 * reinterpret that text in the session's time zone (a wrong instant on any server not running in
 * UTC) and would end in 2038 on MariaDB before 11.5. Query it against `UTC_TIMESTAMP()`.
 */
export const rateLimitLogs = mysqlTable(
  'rate_limit_logs',
  {
    id: bigint('id', { mode: 'number', unsigned: true }).autoincrement().primaryKey(),
    /** 0 critical, 1 high, 2 normal, 3 low. */
    priority: tinyint('priority').notNull(),
    status: mysqlEnum('status', LOG_STATUSES as [LogStatus, ...LogStatus[]]).notNull(),
    /** `METHOD /path`, secrets removed (query strings dropped or redacted by the core). */
    endpoint: varchar('endpoint', { length: ENDPOINT_MAX_CHARS }).notNull(),
    responseStatus: int('response_status'),
    /** Milliseconds. */
    duration: int('duration'),
    /** When it happened (UTC, millisecond precision). */
    timestamp: datetime('timestamp', { mode: 'date', fsp: 3 }).notNull(),
  },
  (t) => [index('rate_limit_logs_timestamp').on(t.timestamp)],
);

/** A row as Drizzle inserts it. */
export type RateLimitLogInsert = typeof rateLimitLogs.$inferInsert;
/** A row as Drizzle reads it back (with its `id`). */
export type RateLimitLogSelect = typeof rateLimitLogs.$inferSelect;

/** Any Drizzle MySQL database (mysql2, PlanetScale, TiDB, ...). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type DrizzleMySqlDatabase = MySqlDatabase<any, any, any, any>;

/**
 * A `LogSink` writer: one multi-row `INSERT INTO rate_limit_logs` per batch through `db`
 * (`drizzle(pool)` from `drizzle-orm/mysql2`). `table` is this module's `rateLimitLogs` unless the
 * application declares its own table of the same shape.
 *
 * ```ts
 * import { drizzle } from 'drizzle-orm/mysql2';
 * import mysql from 'mysql2/promise';
 * import { LogSink } from 'traffic-control/logs';
 * import { drizzleWriter } from 'traffic-control/drizzle';
 *
 * const db = drizzle(mysql.createPool(process.env.DATABASE_URL!));
 * const sink = new LogSink(tc, drizzleWriter(db));
 * ```
 */
export function drizzleWriter(db: DrizzleMySqlDatabase, table: typeof rateLimitLogs = rateLimitLogs): LogWriter {
  return async (rows: RateLimitLogRow[]) => {
    if (rows.length === 0) return;
    await db.insert(table).values(rows);
  };
}
