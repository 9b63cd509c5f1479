import { createHash, timingSafeEqual } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { AuditEventName, AuditEvents } from '../security/audit.js'
import { errors } from '../errors.js'
import { JWT_BEARER_GRANT } from '../oauth/jwt.js'
import type { Store, StoreStats } from '../storage/contract.js'
import { errorKind, PROVIDER_OPERATIONS } from './instrument.js'
import { FastHistogram, PendingCounts, type HistogramSeries, type PendingSeries } from './series.js'
import { RATE_LIMIT_NAMES, type RateLimitName, type ResolvedMetricsOptions } from './options.js'

/** Every metric family the plugin can emit, by name (the dashboards and alerts use exactly these). */
export const METRIC_NAMES = {
  httpRequests: 'oauth_http_requests_total',
  httpDuration: 'oauth_http_request_duration_milliseconds',
  authorizationStarted: 'oauth_authorization_started_total',
  callbackProcessed: 'oauth_callback_processed_total',
  codeExchanged: 'oauth_code_exchanged_total',
  tokensIssued: 'oauth_tokens_issued_total',
  tokenRefreshed: 'oauth_token_refreshed_total',
  tokenRevoked: 'oauth_token_revoked_total',
  clientRegistered: 'oauth_client_registered_total',
  clientDeleted: 'oauth_client_deleted_total',
  consent: 'oauth_consent_total',
  rateLimitExceeded: 'oauth_rate_limit_exceeded_total',
  pkceFailed: 'oauth_pkce_validation_failed_total',
  codeReuse: 'oauth_code_reuse_detected_total',
  tokenReuse: 'oauth_token_reuse_detected_total',
  browserMismatch: 'oauth_browser_binding_failed_total',
  invalidRedirect: 'oauth_invalid_redirect_total',
  storageOperations: 'storage_operation_total',
  storageDuration: 'storage_operation_duration_milliseconds',
  storageTokens: 'storage_tokens_count',
  storageRefreshTokens: 'storage_refresh_tokens_count',
  storageFamilies: 'storage_families_count',
  storageClients: 'storage_clients_count',
  storageFlows: 'storage_flows_count',
  storageCodes: 'storage_codes_count',
  providerCalls: 'provider_api_calls_total',
  providerDuration: 'provider_api_duration_milliseconds',
  providerErrors: 'provider_api_errors_total'
} as const

const HTTP_BUCKETS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
const STORAGE_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000]
const PROVIDER_BUCKETS = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]

/**
 * The grant_type label: a short value per grant that can issue tokens (the jwt-bearer URN would be a
 * clumsy label). Total over the audit event's grant types, so a new grant fails to compile until it has one.
 */
const GRANT_LABELS: Readonly<Record<AuditEvents['token_issued']['grantType'], string>> = {
  authorization_code: 'authorization_code',
  refresh_token: 'refresh_token',
  client_credentials: 'client_credentials',
  [JWT_BEARER_GRANT]: 'jwt_bearer'
}
/** The grants whose series start at zero: those that emit token_issued (a rotation emits token_refreshed). */
const ISSUING_GRANTS = ['authorization_code', 'client_credentials', JWT_BEARER_GRANT] as const

/** Methods outside this set are labelled OTHER (Node accepts a few dozen exotic ones). */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])

type Labels = Record<string, string>
type Handlers = { [E in AuditEventName]: ((fields: AuditEvents[E]) => void) | null }

export interface MetricsDeps {
  /** The store as configured (unwrapped): its stats() feed the gauges. */
  store: Store
  /** Client ids of the `clients` option: the only values a client_id label may take. */
  staticClientIds: string[]
  /** Provider name, to start its series at zero. */
  providerName?: string
}

function sha256 (value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

/**
 * The Prometheus side: metric families in a prom-client registry, fed by the audit stream, by an
 * onResponse hook (HTTP), by the storage and provider wrappers, and by store.stats() at scrape time.
 */
export class Metrics {
  readonly registry: Registry
  readonly #own: boolean
  readonly #options: ResolvedMetricsOptions
  readonly #deps: MetricsDeps
  readonly #names: string[] = []
  /** Route URL -> rate-limit budget, learnt from the OAuth scope's routes. */
  readonly #budgets = new Map<string, RateLimitName>()
  readonly #staticClients: ReadonlySet<string>
  readonly #counters: Record<string, Counter<string>> = {}
  readonly #gauges: Array<Gauge<string>> = []
  /** The families every request updates: plain numbers, read by prom-client at scrape time (./series.ts). */
  readonly #httpRequests = new PendingCounts()
  #httpDuration!: FastHistogram
  readonly #storageOps = new PendingCounts()
  #storageDuration!: FastHistogram
  #providerCalls!: Counter<string>
  #providerDuration!: Histogram<string>
  #providerErrors!: Counter<string>
  readonly #httpChildren = new Map<string, PendingSeries>()
  readonly #durationChildren = new Map<string, HistogramSeries>()
  readonly #storageChildren = new Map<string, { ok: PendingSeries, error: PendingSeries, duration: HistogramSeries }>()
  #stats: { at: number, value: StoreStats | null } | null = null
  #statsPending: Promise<StoreStats | null> | null = null
  #lastStats: StoreStats | null = null
  readonly #handlers: Handlers

  private constructor (registry: Registry, own: boolean, options: ResolvedMetricsOptions, deps: MetricsDeps) {
    this.registry = registry
    this.#own = own
    this.#options = options
    this.#deps = deps
    this.#staticClients = new Set(deps.staticClientIds)
    const c = (key: string) => this.#counters[key] as Counter<string>
    const client = (clientId: string) => this.#clientLabel(clientId)
    // One line per audit event: what it counts (null: nothing). A new event fails to compile until it has a line.
    this.#handlers = {
      authorization_started: f => c('authorizationStarted').inc(client(f.clientId)),
      callback_processed: f => c('callbackProcessed').inc({ ...client(f.clientId), outcome: f.outcome }),
      token_issued: f => {
        if (f.grantType === 'authorization_code') c('codeExchanged').inc(client(f.clientId))
        c('tokensIssued').inc({ ...client(f.clientId), grant_type: GRANT_LABELS[f.grantType] })
      },
      token_refreshed: f => c('tokenRefreshed').inc(client(f.clientId)),
      token_revoked: f => c('tokenRevoked').inc({ ...client(f.clientId), token_type: f.tokenType }),
      code_reuse: f => c('codeReuse').inc(client(f.clientId)),
      refresh_reuse: f => c('tokenReuse').inc(client(f.clientId)),
      pkce_failure: f => c('pkceFailed').inc(client(f.clientId)),
      client_registered: f => c('clientRegistered').inc({ source: f.source }),
      client_deleted: () => c('clientDeleted').inc(),
      invalid_redirect: () => c('invalidRedirect').inc(),
      consent_approved: () => c('consent').inc({ decision: 'approved' }),
      consent_denied: () => c('consent').inc({ decision: 'denied' }),
      browser_mismatch: () => c('browserMismatch').inc(),
      // Routes of the OAuth scope are mapped to their budget; the only other limiter is the per-user one of the guard.
      rate_limited: f => c('rateLimitExceeded').inc({ limiter_type: this.#budgets.get(f.route) ?? 'mcp' }),
      // Counted elsewhere: logins by oauth_callback_processed_total, upstream failures by provider_api_errors_total.
      login_succeeded: null,
      upstream_failure: null,
      // Counted by provider_api_errors_total (the failure that ended the grant).
      upstream_access_lost: null,
      config_weakened: null
    }
  }

  /** prom-client is loaded here, only when metrics are on. */
  static async create (options: ResolvedMetricsOptions, deps: MetricsDeps): Promise<Metrics> {
    const prom = await import('prom-client')
    const registry = options.registry ?? new prom.Registry()
    const metrics = new Metrics(registry, options.registry === undefined, options, deps)
    metrics.#register(prom)
    return metrics
  }

  #clientLabel (clientId: string): Labels {
    if (this.#options.clientIdLabel === 'none') return {}
    return { client_id: this.#staticClients.has(clientId) ? clientId : 'other' }
  }

  #register (prom: typeof import('prom-client')): void {
    const registers = [this.registry]
    const withClient = this.#options.clientIdLabel === 'none' ? [] : ['client_id']
    const existing = Object.values(METRIC_NAMES).find(name => this.registry.getSingleMetric(name) !== undefined)
    if (existing !== undefined) {
      throw new errors.METRIC_EXISTS(existing)
    }
    const counter = (key: keyof typeof METRIC_NAMES, help: string, labelNames: string[] = [], pending?: PendingCounts) => {
      const metric = new prom.Counter({
        name: METRIC_NAMES[key],
        help,
        labelNames,
        registers,
        ...(pending !== undefined ? { collect (this: Counter<string>) { pending.flush(this) } } : {})
      })
      this.#names.push(METRIC_NAMES[key])
      this.#counters[key] = metric
      return metric
    }
    const histogram = (key: keyof typeof METRIC_NAMES, help: string, labelNames: string[], buckets: number[]) => {
      this.#names.push(METRIC_NAMES[key])
      return new prom.Histogram({ name: METRIC_NAMES[key], help, labelNames, buckets, registers })
    }
    const fastHistogram = (key: keyof typeof METRIC_NAMES, help: string, labelNames: string[], buckets: number[]) => {
      this.#names.push(METRIC_NAMES[key])
      const metric = new FastHistogram({ name: METRIC_NAMES[key], help, labelNames, buckets })
      this.registry.registerMetric(metric as never)
      return metric
    }
    const initial = this.#options.clientIdLabel === 'none' ? {} : { client_id: 'other' }

    counter('httpRequests', 'HTTP requests by route pattern ("other": no route matched)', ['method', 'endpoint', 'status'], this.#httpRequests)
    this.#httpDuration = fastHistogram('httpDuration', 'HTTP request duration in milliseconds, by route pattern', ['endpoint'], HTTP_BUCKETS)

    counter('authorizationStarted', 'Authorization requests that passed validation', withClient).inc(initial, 0)
    const callback = counter('callbackProcessed', 'Identity provider callbacks that redirected back to the client, by outcome', [...withClient, 'outcome'])
    for (const outcome of ['success', 'error']) callback.inc({ ...initial, outcome }, 0)
    counter('codeExchanged', 'Authorization codes exchanged for tokens', withClient).inc(initial, 0)
    const issued = counter('tokensIssued', 'Grants that issued their first tokens, by grant type (refresh rotations: oauth_token_refreshed_total)', [...withClient, 'grant_type'])
    for (const grant of ISSUING_GRANTS) issued.inc({ ...initial, grant_type: GRANT_LABELS[grant] }, 0)
    counter('tokenRefreshed', 'Refresh tokens rotated', withClient).inc(initial, 0)
    const revoked = counter('tokenRevoked', 'Tokens revoked through the revocation endpoint, by token type', [...withClient, 'token_type'])
    for (const type of ['access_token', 'refresh_token']) revoked.inc({ ...initial, token_type: type }, 0)
    const registered = counter('clientRegistered', 'Clients registered, by source (cimd: a client metadata document fetched and accepted)', ['source'])
    for (const source of ['dcr', 'static', 'cimd']) registered.inc({ source }, 0)
    counter('clientDeleted', 'Clients deleted through RFC 7592').inc(0)
    const consent = counter('consent', 'Consent page decisions', ['decision'])
    for (const decision of ['approved', 'denied']) consent.inc({ decision }, 0)

    const limited = counter('rateLimitExceeded', 'Requests refused by a rate limit, by budget', ['limiter_type'])
    for (const budget of RATE_LIMIT_NAMES) limited.inc({ limiter_type: budget }, 0)
    counter('pkceFailed', 'Token requests whose PKCE verifier was missing or wrong', withClient).inc(initial, 0)
    counter('codeReuse', 'Authorization codes presented again (the grant they issued is revoked)', withClient).inc(initial, 0)
    counter('tokenReuse', 'Rotated refresh tokens presented again outside the grace window (the family is revoked)', withClient).inc(initial, 0)
    counter('browserMismatch', 'Callbacks that arrived in another browser than the one that consented').inc(0)
    counter('invalidRedirect', 'Authorization requests with an unregistered redirect URI').inc(0)

    counter('storageOperations', 'Storage operations, by operation and result (ok, error)', ['operation', 'result'], this.#storageOps)
    this.#storageDuration = fastHistogram('storageDuration', 'Storage operation duration in milliseconds', ['operation'], STORAGE_BUCKETS)

    this.#providerCalls = counter('providerCalls', 'Calls to the identity provider', ['provider', 'operation'])
    this.#providerDuration = histogram('providerDuration', 'Identity provider call duration in milliseconds', ['provider', 'operation'], PROVIDER_BUCKETS)
    this.#providerErrors = counter('providerErrors', 'Failed identity provider calls, by kind', ['provider', 'operation', 'kind'])
    if (this.#deps.providerName !== undefined) {
      for (const operation of Object.values(PROVIDER_OPERATIONS)) this.#providerCalls.inc({ provider: this.#deps.providerName, operation }, 0)
    }

    const store = this.#deps.store
    if (typeof store.stats === 'function') {
      const gauges: Array<[keyof typeof METRIC_NAMES, keyof StoreStats, string]> = [
        ['storageTokens', 'accessTokens', 'Live access tokens in storage'],
        ['storageRefreshTokens', 'refreshTokens', 'Refresh tokens in storage (rotated ones included until they expire)'],
        ['storageFamilies', 'grants', 'Grants (refresh token families) in storage'],
        ['storageClients', 'clients', 'Registered clients in storage'],
        ['storageFlows', 'flows', 'Authorizations in progress (between consent and callback)'],
        ['storageCodes', 'codes', 'Authorization codes issued and not yet expired']
      ]
      const load = () => this.#loadStats()
      for (const [key, field, help] of gauges) {
        this.#names.push(METRIC_NAMES[key])
        this.#gauges.push(new prom.Gauge({
          name: METRIC_NAMES[key],
          help,
          registers,
          async collect () {
            const stats = await load()
            if (stats !== null) this.set(stats[field])
          }
        }))
      }
    }
  }

  /** store.stats(), shared by the gauges of one scrape and cached briefly; on failure or timeout the previous values. */
  async #loadStats (): Promise<StoreStats | null> {
    const cached = this.#stats
    if (cached !== null && performance.now() - cached.at < this.#options.statsCacheMs) return cached.value
    this.#statsPending ??= this.#fetchStats().finally(() => { this.#statsPending = null })
    return this.#statsPending
  }

  async #fetchStats (): Promise<StoreStats | null> {
    const store = this.#deps.store
    const start = performance.now()
    let timer: NodeJS.Timeout | undefined
    try {
      const value = await Promise.race([
        (store.stats as () => Promise<StoreStats>).call(store),
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new errors.STORE_STATS_TIMEOUT()), this.#options.statsTimeoutMs)
          timer.unref()
        })
      ])
      this.recordStorage('stats', performance.now() - start, true)
      this.#lastStats = value
    } catch {
      this.recordStorage('stats', performance.now() - start, false)
    } finally {
      clearTimeout(timer)
    }
    this.#stats = { at: performance.now(), value: this.#lastStats }
    return this.#lastStats
  }

  /** The audit listener. */
  onAudit = <E extends AuditEventName>(event: E, fields: AuditEvents[E]): void => {
    (this.#handlers[event] as ((f: AuditEvents[E]) => void) | null)?.(fields)
  }

  /** The OAuth scope tells which budget protects which route. */
  setBudget (url: string, budget: RateLimitName): void {
    this.#budgets.set(url, budget)
  }

  recordStorage = (operation: string, ms: number, ok: boolean): void => {
    let children = this.#storageChildren.get(operation)
    if (children === undefined) {
      children = {
        ok: this.#storageOps.series({ operation, result: 'ok' }),
        error: this.#storageOps.series({ operation, result: 'error' }),
        duration: this.#storageDuration.series({ operation })
      }
      this.#storageChildren.set(operation, children)
    }
    (ok ? children.ok : children.error).inc()
    children.duration.observe(ms)
  }

  recordProvider = (provider: string, operation: string, ms: number, error: unknown): void => {
    const labels = { provider, operation }
    this.#providerCalls.inc(labels)
    this.#providerDuration.observe(labels, ms)
    if (error !== undefined) this.#providerErrors.inc({ ...labels, kind: errorKind(error) })
  }

  /** onResponse, app-wide: the route pattern is the label, never the URL. */
  #onResponse = (request: FastifyRequest, reply: FastifyReply, done: () => void): void => {
    const url = request.routeOptions.url
    if (url === this.#options.path) { done(); return }
    const endpoint = url === undefined || request.is404 ? 'other' : url
    const method = METHODS.has(request.method) ? request.method : 'OTHER'
    const status = reply.statusCode
    const key = `${method} ${status} ${endpoint}`
    let child = this.#httpChildren.get(key)
    if (child === undefined) {
      child = this.#httpRequests.series({ method, endpoint, status: String(status) })
      this.#httpChildren.set(key, child)
    }
    child.inc()
    let duration = this.#durationChildren.get(endpoint)
    if (duration === undefined) {
      duration = this.#httpDuration.series({ endpoint })
      this.#durationChildren.set(endpoint, duration)
    }
    duration.observe(reply.elapsedTime)
    done()
  }

  /** The HTTP hook (on the instance the plugin is registered on, which fastify-plugin makes the app) and the scrape route. */
  install (fastify: FastifyInstance): void {
    fastify.addHook('onResponse', this.#onResponse)
    const expected = this.#options.token === undefined ? undefined : sha256(this.#options.token)
    const registry = this.registry
    fastify.get(this.#options.path, { config: { otel: false } as never }, async (request, reply) => {
      reply.header('cache-control', 'no-store')
      if (expected !== undefined) {
        const header = request.headers.authorization
        const match = header === undefined ? null : /^bearer +(\S+) *$/i.exec(header)
        // Hashing first makes both sides the same length, so the comparison leaks nothing, not even the length.
        if (match === null || !timingSafeEqual(sha256(match[1] as string), expected)) {
          return reply.code(401).header('www-authenticate', 'Bearer realm="metrics"')
            .send({ error: 'invalid_token', error_description: 'The metrics endpoint requires its bearer token' })
        }
      }
      reply.header('content-type', registry.contentType)
      return registry.metrics()
    })
  }

  /** Take the plugin's families out of a shared registry (a restart can then add them again). */
  close (): void {
    if (this.#own) {
      this.registry.clear()
      return
    }
    for (const name of this.#names) this.registry.removeSingleMetric(name)
  }
}
