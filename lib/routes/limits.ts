import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify'
import { OAuthError } from '../errors.js'
import type { RateLimitName, ResolvedConfig } from '../options/index.js'
import type { Auditor } from '../security/audit.js'
import type { GuardLimiter } from '../guard.js'

/** What the limits put in a route's `config`: its budget (@fastify/rate-limit) and its handler span (@fastify/otel). */
export interface RouteLimitConfig {
  rateLimit?: { max: number, timeWindow: number }
  otel?: { instrumentHandler: false }
}

export interface RouteLimitsOptions {
  rateLimits: ResolvedConfig['rateLimits']
  /** Tracing is on: flow steps get spans of their own. */
  stepSpans: boolean
  /** An ioredis client shared with the store, so limits hold across replicas. */
  redis?: unknown
  auditor: Auditor
}

/**
 * The rate limits of one registration of the plugin: the `config` of each route in the OAuth scope,
 * @fastify/rate-limit on that scope, and the per-user limiter that the guard runs on MCP routes.
 */
export class RouteLimits {
  readonly #options: RouteLimitsOptions
  /** One config per budget: routes of a budget share it, and `budgetOf` recognises it. */
  readonly #routes = new Map<RateLimitName, RouteLimitConfig>()
  #perUser: GuardLimiter | undefined

  constructor (options: RouteLimitsOptions) {
    this.#options = options
  }

  /**
   * `config` for a route with the named budget (no rate limit when rate limiting is off). With tracing
   * on, flow-step routes (every budget but metadata) also tell @fastify/otel to skip its handler span:
   * the step's own span takes its place, so storage and provider spans nest under the step.
   */
  route (name: RateLimitName): RouteLimitConfig {
    let config = this.#routes.get(name)
    if (config === undefined) {
      const { rateLimits, stepSpans } = this.#options
      config = name !== 'metadata' && stepSpans ? { otel: { instrumentHandler: false } } : {}
      if (rateLimits.enabled) {
        const budget = rateLimits[name]
        config.rateLimit = { max: budget.max, timeWindow: budget.windowSeconds * 1000 }
      }
      this.#routes.set(name, config)
    }
    return config
  }

  /** The budget of a route whose config came from `route()` (telemetry labels its rate-limit hits with it). */
  budgetOf (route: RouteOptions): RateLimitName | undefined {
    if (!this.#options.rateLimits.enabled) return undefined
    return [...this.#routes].find(([, config]) => config === route.config)?.[0]
  }

  /**
   * Put @fastify/rate-limit on the OAuth scope (routes added there afterwards get their budgets) and
   * build the per-user limiter from it.
   */
  async install (scope: FastifyInstance): Promise<void> {
    const { rateLimits, redis, auditor } = this.#options
    await scope.register(rateLimit, {
      global: false,
      enableDraftSpec: true,
      // With a shared Redis down, limiting fails open: the endpoint's own store call answers 503.
      skipOnError: true,
      ...(redis !== undefined ? { redis, nameSpace: 'mcp-oauth-rate:' } : {}),
      errorResponseBuilder: (_request, ctx) =>
        new OAuthError('temporarily_unavailable', `Too many requests; retry in ${ctx.after}`, { statusCode: 429 }),
      onExceeded: (request) => {
        auditor.emit('rate_limited', { route: request.routeOptions.url ?? request.url })
      }
    })
    if (rateLimits.enabled) {
      const budget = rateLimits.mcp
      this.#perUser = scope.rateLimit({
        max: budget.max,
        timeWindow: budget.windowSeconds * 1000,
        keyGenerator: (request: FastifyRequest) => request.mcpAuth === null ? `ip:${request.ip}` : `user:${request.mcpAuth.userId}`
      })
    }
  }

  /** The guard's per-user limiter: undefined when rate limiting is off, set once `install` has run. */
  get perUser (): GuardLimiter | undefined {
    return this.#perUser
  }
}
