import type { TracerProvider } from '@opentelemetry/api'
import type { Registry } from 'prom-client'
import { errors } from '../errors.js'

/**
 * The rate-limit budgets of the `rateLimit` option. Named here, on telemetry's floor, so metrics can
 * start each budget's series at zero without importing upwards from lib/options.
 */
export const RATE_LIMIT_NAMES = ['metadata', 'authorize', 'token', 'register', 'revocation', 'mcp'] as const
export type RateLimitName = typeof RATE_LIMIT_NAMES[number]

/** `metrics` option: Prometheus exposition of the plugin's counters, histograms and gauges. */
export interface MetricsOptions {
  /** Off by default. When off nothing is loaded, no hook is added and no route is served. */
  enabled: boolean
  /** Where the exposition is served (GET). Default `/metrics`. */
  path?: string
  /** A prom-client Registry to add the plugin's metrics to (to share one with your own). Default: a private one. */
  registry?: Registry
  /**
   * Bearer token that Prometheus must send (`Authorization: Bearer <token>`), compared in constant
   * time. Without one the endpoint is open to anyone who can reach it, and a start-up warning says so.
   */
  token?: string
  /**
   * `'none'` (default): no client_id label anywhere, since anyone can register clients and each new
   * id would be a new time series. `'static-only'`: flow and security counters carry `client_id`
   * for clients from the `clients` option and `"other"` for every registered or metadata-document client.
   */
  clientIdLabel?: 'none' | 'static-only'
  /** How long one `store.stats()` answer serves scrapes (ms). Default 5000. */
  statsCacheMs?: number
  /** How long a scrape waits for `store.stats()` before it serves the previous values (ms). Default 2000. */
  statsTimeoutMs?: number
}

/** `tracing` option: OpenTelemetry spans through the global API (a no-op until an SDK is registered). */
export interface TracingOptions {
  /** On by default; `false` removes the wrappers altogether. */
  enabled?: boolean
  /** A tracer provider to use instead of the global one. */
  tracerProvider?: TracerProvider
}

export interface ResolvedMetricsOptions {
  path: string
  registry?: Registry
  token?: string
  clientIdLabel: 'none' | 'static-only'
  statsCacheMs: number
  statsTimeoutMs: number
}

export interface ResolvedTracingOptions {
  tracerProvider?: TracerProvider
}

export interface ResolvedTelemetryOptions {
  /** null: metrics off. */
  metrics: ResolvedMetricsOptions | null
  /** null: tracing off. */
  tracing: ResolvedTracingOptions | null
}

function bad (field: string, message: string): Error {
  return new errors.INVALID_OPTION(field, message)
}

function isObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function checkKeys (field: string, value: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) throw bad(`${field}.${key}`, 'is not a known option')
  }
}

function milliseconds (field: string, value: unknown, def: number, max: number): number {
  if (value === undefined) return def
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw bad(field, `must be an integer from 0 to ${max}`)
  }
  return value
}

const METRICS_KEYS = ['enabled', 'path', 'registry', 'token', 'clientIdLabel', 'statsCacheMs', 'statsTimeoutMs'] as const
const TRACING_KEYS = ['enabled', 'tracerProvider'] as const

/** Validate `metrics` and `tracing`; throws FST_MCP_OAUTH_INVALID_OPTION naming the field. */
export function resolveTelemetryOptions (opts: { metrics?: unknown, tracing?: unknown }): ResolvedTelemetryOptions {
  return { metrics: resolveMetrics(opts.metrics), tracing: resolveTracing(opts.tracing) }
}

function resolveMetrics (metrics: unknown): ResolvedMetricsOptions | null {
  if (metrics === undefined) return null
  if (!isObject(metrics)) throw bad('metrics', 'must be an object ({ enabled: true, ... })')
  checkKeys('metrics', metrics, METRICS_KEYS)
  if (typeof metrics.enabled !== 'boolean') throw bad('metrics.enabled', 'must be a boolean')
  const path = metrics.path ?? '/metrics'
  if (typeof path !== 'string' || !/^\/[A-Za-z0-9\-._~/]*$/.test(path) || path.includes('//')) {
    throw bad('metrics.path', 'must be an absolute path such as /metrics (letters, digits, - . _ ~ /)')
  }
  const registry = metrics.registry
  if (registry !== undefined && (!isObject(registry) || typeof registry.registerMetric !== 'function' || typeof registry.metrics !== 'function')) {
    throw bad('metrics.registry', 'must be a prom-client Registry')
  }
  const token = metrics.token
  if (token !== undefined && (typeof token !== 'string' || token.length < 16 || /\s/.test(token))) {
    throw bad('metrics.token', 'must be a string of at least 16 characters without spaces')
  }
  const clientIdLabel = metrics.clientIdLabel ?? 'none'
  if (clientIdLabel !== 'none' && clientIdLabel !== 'static-only') throw bad('metrics.clientIdLabel', 'must be "none" or "static-only"')
  const resolved: ResolvedMetricsOptions = {
    path,
    clientIdLabel,
    statsCacheMs: milliseconds('metrics.statsCacheMs', metrics.statsCacheMs, 5000, 3_600_000),
    statsTimeoutMs: milliseconds('metrics.statsTimeoutMs', metrics.statsTimeoutMs, 2000, 60_000)
  }
  if (!metrics.enabled) return null
  if (registry !== undefined) resolved.registry = registry as unknown as Registry
  if (token !== undefined) resolved.token = token as string
  return resolved
}

function resolveTracing (tracing: unknown): ResolvedTracingOptions | null {
  if (tracing === undefined || tracing === true) return {}
  if (tracing === false) return null
  if (!isObject(tracing)) throw bad('tracing', 'must be a boolean or an object ({ enabled, tracerProvider })')
  checkKeys('tracing', tracing, TRACING_KEYS)
  if (tracing.enabled !== undefined && typeof tracing.enabled !== 'boolean') throw bad('tracing.enabled', 'must be a boolean')
  const provider = tracing.tracerProvider
  if (provider !== undefined && (!isObject(provider) || typeof provider.getTracer !== 'function')) {
    throw bad('tracing.tracerProvider', 'must be an OpenTelemetry TracerProvider')
  }
  if (tracing.enabled === false) return null
  return provider === undefined ? {} : { tracerProvider: provider as unknown as TracerProvider }
}
