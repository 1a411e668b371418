// The public surface, the same in the Node/Bun and the wasm packages.
export { TrafficControl, Permit, Reservation } from './traffic-control.js';
export type { Completion, FollowUp, Outcome, RequestOptions, Target, TrafficControlOptions } from './traffic-control.js';
export { TrafficControlError } from './errors.js';
export type { ErrorCode, ErrorKind } from './errors.js';
export { Priority } from './types.js';
export type {
  Config,
  CostExtra,
  FeedbackConfig,
  RouteCost,
  Decision,
  Duration,
  Host,
  LimitConfig,
  LimitPause,
  LimitSnapshot,
  MetricFamily,
  Metrics,
  Native,
  PriorityName,
  PresetName,
  RouteConfig,
  TenantConfig,
  TierConfig,
  ShadowReport,
  ShadowSide,
  Snapshot,
  TrafficEvent,
  EventType,
} from './types.js';
export { registerMetrics } from './prometheus.js';
export { simulate } from './simulate.js';
export type {
  ServerModel,
  SimulatedConfig,
  SimulatedWaits,
  SimulateOptions,
  Simulation,
  SimulationReport,
  Workload,
  WorkloadBurst,
  WorkloadStep,
  WorkloadStream,
} from './simulate.js';
export type { PromClient, PromRegistry } from './prometheus.js';
export { SharedTrafficControl, SharedPermit, SharedReservation, runScript } from './shared.js';
export type { RedisClient, SharedCompletion, SharedOptions, SharedRequest, SharedSnapshot } from './shared.js';
