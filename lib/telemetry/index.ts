import type { FastifyInstance, RouteOptions } from 'fastify'
import type { Auditor } from '../security/audit.js'
import type { Provider } from '../providers/types.js'
import type { Store } from '../storage/contract.js'
import { instrumentProvider, instrumentStore } from './instrument.js'
import { Metrics } from './metrics.js'
import type { RateLimitName, ResolvedTelemetryOptions } from './options.js'
import { Tracing } from './tracing.js'

export type { MetricsOptions, TracingOptions, ResolvedTelemetryOptions } from './options.js'
export { METRIC_NAMES } from './metrics.js'

/** What the OAuth scope (lib/routes/oauth.ts) hands to telemetry. */
export interface RouteTelemetry {
  /** Every route of the scope, with the rate-limit budget its config names (if any). */
  onRoute (route: RouteOptions, budget: RateLimitName | undefined): void
  /** Flow steps get spans of their own (tracing is on). */
  stepSpans: boolean
}

export interface Telemetry {
  /** The store to build the services on: instrumented when metrics or tracing are on. */
  store: Store
  provider: Provider | undefined
  /** For the OAuth scope; undefined when both are off. */
  routes: RouteTelemetry | undefined
  metrics: Metrics | undefined
}

export interface TelemetryDeps {
  auditor: Auditor
  store: Store
  provider: Provider | undefined
  /** The issuer's path ('' at the root): flow-step routes are recognised below it. */
  basePath: string
  staticClientIds: string[]
}

/**
 * Install metrics and tracing as configured. With both off this returns the store and provider
 * untouched and adds nothing: no hook, no route, no import of prom-client.
 */
export async function setupTelemetry (fastify: FastifyInstance, options: ResolvedTelemetryOptions, deps: TelemetryDeps): Promise<Telemetry> {
  const { auditor, basePath } = deps
  if (options.metrics === null && options.tracing === null) {
    return { store: deps.store, provider: deps.provider, routes: undefined, metrics: undefined }
  }
  const metrics = options.metrics === null
    ? undefined
    : await Metrics.create(options.metrics, {
      store: deps.store,
      staticClientIds: deps.staticClientIds,
      ...(deps.provider !== undefined ? { providerName: deps.provider.name } : {})
    })
  const tracing = options.tracing === null ? undefined : new Tracing(options.tracing, auditor.pseudonym)

  const live = (): boolean => tracing?.live === true
  const store = instrumentStore(deps.store, tracing?.tracer, metrics?.recordStorage, live)
  const provider = deps.provider === undefined ? undefined : instrumentProvider(deps.provider, tracing?.tracer, metrics?.recordProvider, live)
  if (metrics !== undefined) {
    auditor.subscribe(metrics.onAudit)
    metrics.install(fastify)
    fastify.addHook('onClose', async () => metrics.close())
  }
  if (tracing !== undefined) auditor.subscribe(tracing.onAudit)

  const routes: RouteTelemetry = {
    onRoute (route, budget) {
      if (metrics !== undefined && budget !== undefined) metrics.setBudget(route.url, budget)
      tracing?.wrapRoute(route, basePath)
    },
    stepSpans: tracing !== undefined
  }
  return { store, provider, routes, metrics }
}
