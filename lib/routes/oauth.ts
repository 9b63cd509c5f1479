import cookie from '@fastify/cookie'
import formbody from '@fastify/formbody'
import rateLimit from '@fastify/rate-limit'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { logOAuthError, OAuthError, oauthErrorHandler, toOAuthError } from '../errors.js'
import { errorPage, sendPage } from './html.js'
import type { Auditor } from '../security/audit.js'
import { AUTHORIZATION_SERVER_WELL_KNOWN, PROTECTED_RESOURCE_WELL_KNOWN, type ResolvedConfig, type RateLimitName } from '../options/index.js'
import { authorizeRoutes, type AuthorizeRouteDeps } from './authorize.js'
import { callbackRoutes } from './callback.js'
import { tokenRoutes, type TokenRouteDeps } from './token.js'
import { registerRoutes, type RegisterRouteDeps } from './register.js'
import { revokeRoutes, type RevokeRouteDeps } from './revoke.js'
import { introspectRoutes } from './introspect.js'
import { metadataRoutes } from './metadata.js'
import type { RouteTelemetry } from '../telemetry/index.js'

/** The per-user limiter of guarded routes, handed back to the guard once the scope exists. */
export interface LimiterHolder {
  perUser?: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>
}

export type OAuthRouteDeps = AuthorizeRouteDeps & TokenRouteDeps & RegisterRouteDeps & RevokeRouteDeps & {
  auditor: Auditor
  limiter: LimiterHolder
  /** An ioredis client shared with the store, so limits hold across replicas. */
  rateLimitRedis?: unknown
  /** Metrics and spans (lib/telemetry); absent when both are off. */
  telemetry?: RouteTelemetry
}

/** Body limit for OAuth endpoints: their requests are a few hundred bytes. */
const BODY_LIMIT = 64 * 1024

/** Which budget each route's rate-limit config came from (telemetry labels rate-limit hits with it). */
const budgetNames = new WeakMap<object, RateLimitName>()
/** Request log line without the query string. */
function pathOnly (req: { method?: string, url?: string, ip?: string }): Record<string, unknown> {
  return { method: req.method, url: pathOf(req.url ?? ''), remoteAddress: req.ip }
}

/** A URL cut where a query, path parameters (`;`, a query to some routers) or a fragment begin. */
function pathOf (url: string): string {
  const end = url.search(/[?;#]/)
  return end < 0 ? url : url.slice(0, end)
}

/**
 * Fastify's not-found answer (same shape) with the path only. No log line of its own: Fastify's
 * request lines (incoming, with the path only here, and completed, 404) say it all, and follow
 * whatever the application decided for request logging.
 */
function notFound (request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return reply.code(404).send({ message: `Route ${request.method}:${pathOf(request.url)} not found`, error: 'Not Found', statusCode: 404 })
}

/** Configurations whose flow steps get spans of their own (see `routeLimit`). */
const stepSpans = new WeakSet<ResolvedConfig>()

/**
 * `config` for a route with the named budget (no rate limit when rate limiting is off). With tracing
 * on, flow-step routes (every budget but metadata) also tell @fastify/otel to skip its handler span:
 * the step's own span takes its place, so storage and provider spans nest under the step.
 */
export function routeLimit (config: ResolvedConfig, name: RateLimitName): { rateLimit?: { max: number, timeWindow: number }, otel?: { instrumentHandler: false } } {
  const otel = name !== 'metadata' && stepSpans.has(config) ? { otel: { instrumentHandler: false as const } } : {}
  if (!config.rateLimits.enabled) return otel
  const budget = config.rateLimits[name]
  const rateLimit = { max: budget.max, timeWindow: budget.windowSeconds * 1000 }
  budgetNames.set(rateLimit, name)
  return { rateLimit, ...otel }
}

/**
 * The encapsulated scope of every endpoint the plugin serves: rate limits, security headers, body
 * limits, form bodies, cookies, and the error handler that turns anything thrown (validation and
 * rate limiting included) into the RFC 6749 error shape. A route added here gets all of it.
 */
export const oauthRoutes: FastifyPluginAsync<OAuthRouteDeps> = async (fastify, deps) => {
  const { config, auditor } = deps
  fastify.setErrorHandler(oauthErrorHandler)

  fastify.addHook('onRoute', (route: RouteOptions) => {
    route.bodyLimit ??= BODY_LIMIT
    // Query strings here carry codes and states (the callback's upstream code, above all): the
    // request log gets the path only.
    route.logSerializers = { ...route.logSerializers, req: pathOnly }
  })
  // Telemetry: learn each route's rate-limit budget, wrap flow-step handlers in spans.
  const telemetry = deps.telemetry
  if (telemetry !== undefined) {
    fastify.addHook('onRoute', (route: RouteOptions) => {
      const limit = (route.config as { rateLimit?: unknown } | undefined)?.rateLimit
      telemetry.onRoute(route, typeof limit === 'object' && limit !== null ? budgetNames.get(limit) : undefined)
    })
    if (telemetry.stepSpans) stepSpans.add(config)
  }
  // Callback style: no promise per response for four header writes.
  fastify.addHook('onSend', (_request, reply, payload, done) => {
    reply.header('x-content-type-options', 'nosniff')
    reply.header('referrer-policy', 'no-referrer')
    if (config.hsts) reply.header('strict-transport-security', 'max-age=31536000')
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store')
    done(null, payload)
  })

  await fastify.register(rateLimit, {
    global: false,
    enableDraftSpec: true,
    // With a shared Redis down, limiting fails open: the endpoint's own store call answers 503.
    skipOnError: true,
    ...(deps.rateLimitRedis !== undefined ? { redis: deps.rateLimitRedis as never, nameSpace: 'mcp-oauth-rate:' } : {}),
    errorResponseBuilder: (_request, ctx) =>
      new OAuthError('temporarily_unavailable', `Too many requests; retry in ${ctx.after}`, { statusCode: 429 }),
    onExceeded: (request) => {
      auditor.emit('rate_limited', { route: request.routeOptions.url ?? request.url })
    }
  })
  if (config.rateLimits.enabled) {
    const budget = config.rateLimits.mcp
    deps.limiter.perUser = fastify.rateLimit({
      max: budget.max,
      timeWindow: budget.windowSeconds * 1000,
      keyGenerator: (request: FastifyRequest) => request.mcpAuth === null ? `ip:${request.ip}` : `user:${request.mcpAuth.userId}`
    })
  }

  // A request in the plugin's namespaces that matches no route (a wrong method, a trailing slash, a
  // made-up endpoint) would reach Fastify's root not-found handler, whose logger and answer carry the
  // whole URL, credentials in the query included. Each namespace gets a not-found handler of its own,
  // and request loggers that take the path only (the root's factory is out of a plugin's reach: it
  // sets one on its own scope, which only contexts created there use).
  for (const prefix of [`${config.basePath}/oauth`, AUTHORIZATION_SERVER_WELL_KNOWN, PROTECTED_RESOURCE_WELL_KNOWN]) {
    await fastify.register(async (scope) => {
      const parent = scope.childLoggerFactory
      scope.setChildLoggerFactory(function (logger, bindings, opts, rawReq) {
        return parent.call(this, logger, bindings, { ...opts, serializers: { ...opts.serializers, req: pathOnly } }, rawReq)
      })
      scope.setNotFoundHandler(notFound)
    }, { prefix })
  }

  await fastify.register(formbody, { bodyLimit: BODY_LIMIT })
  await fastify.register(metadataRoutes, { config })
  // Cookies (the consent form's CSRF token, the remembered consent) only where a browser comes:
  // the token, revocation and registration endpoints do not run the cookie hooks.
  await fastify.register(async (browser) => {
    // A browser gets a page, not JSON, for whatever these routes throw (a rate limit above all).
    browser.setErrorHandler((err, request, reply) => {
      const oauth = toOAuthError(err)
      logOAuthError(request, err, oauth)
      for (const [name, value] of Object.entries(oauth.headers)) reply.header(name, value)
      const title = oauth.statusCode === 429 ? 'Too many requests' : oauth.statusCode >= 500 ? 'Something went wrong' : 'Request refused'
      return sendPage(reply, deps.style, oauth.statusCode, errorPage(deps.style, config, title, oauth.description))
    })
    await browser.register(cookie)
    await browser.register(authorizeRoutes, deps)
    await browser.register(callbackRoutes, deps)
  })
  await fastify.register(tokenRoutes, deps)
  await fastify.register(revokeRoutes, deps)
  await fastify.register(introspectRoutes, deps)
  if (config.registration.mode !== 'off') await fastify.register(registerRoutes, deps)
}
