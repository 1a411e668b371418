-- The seed's rate_limit_logs table (MySQL 8 / MariaDB 10.5 and later): one row per action of a
-- traffic controller, written by traffic_control.logs.LogSink (Python) or LogSink from
-- 'traffic-control/logs' with drizzleWriter (Node/Bun), whose Drizzle schema (rateLimitLogs in
-- 'traffic-control/drizzle') is this table; the tests of both packages check it against MariaDB.
-- `timestamp` holds UTC (compare it with UTC_TIMESTAMP()): a datetime, not a timestamp column, so
-- the session's time zone never shifts it and it does not end in 2038.
CREATE TABLE IF NOT EXISTS `rate_limit_logs` (
  `id` bigint unsigned AUTO_INCREMENT NOT NULL,
  `priority` tinyint NOT NULL,                                        -- 0 critical, 1 high, 2 normal, 3 low
  `status` enum('QUEUED','EXECUTED','429_HIT','ERROR') NOT NULL,
  `endpoint` varchar(255) NOT NULL,                                   -- METHOD /path, no secrets
  `response_status` int,                                              -- HTTP status, NULL without one
  `duration` int,                                                     -- milliseconds
  `timestamp` datetime(3) NOT NULL,                                   -- UTC
  PRIMARY KEY (`id`),
  INDEX `rate_limit_logs_timestamp` (`timestamp`)
);
