import cookie from '@fastify/cookie'
import formbody from '@fastify/formbody'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { logOAuthError, oauthErrorHandler, toOAuthError } from '../errors.js'
import { errorPage, sendPage } from './html.js'
import { AUTHORIZATION_SERVER_WELL_KNOWN, PROTECTED_RESOURCE_WELL_KNOWN } from '../options/index.js'
import { authorizeRoutes, type AuthorizeRouteDeps } from './authorize.js'
import { callbackRoutes } from './callback.js'
import { tokenRoutes, type TokenRouteDeps } from './token.js'
import { registerRoutes, type RegisterRouteDeps } from './register.js'
import { revokeRoutes, type RevokeRouteDeps } from './revoke.js'
import { introspectRoutes } from './introspect.js'
import { metadataRoutes } from './metadata.js'
import type { RouteLimits } from './limits.js'
import { OAuthErrorResponse } from './schemas.js'
import type { RouteTelemetry } from '../telemetry/index.js'

export type OAuthRouteDeps = AuthorizeRouteDeps & TokenRouteDeps & RegisterRouteDeps & RevokeRouteDeps & {
  /** The rate limits of this registration: every route's budget, and the limiter itself. */
  limits: RouteLimits
  /** Metrics and spans (lib/telemetry); absent when both are off. */
  telemetry?: RouteTelemetry
}

/** Body limit for OAuth endpoints: their requests are a few hundred bytes. */
const BODY_LIMIT = 64 * 1024

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

/**
 * The encapsulated scope of every endpoint the plugin serves: rate limits, security headers, body
 * limits, form bodies, cookies, and the error handler that turns anything thrown (validation and
 * rate limiting included) into the RFC 6749 error shape. A route added here gets all of it.
 */
export const oauthRoutes: FastifyPluginAsync<OAuthRouteDeps> = async (fastify, deps) => {
  const { config, limits } = deps
  fastify.setErrorHandler(oauthErrorHandler)

  fastify.addHook('onRoute', (route: RouteOptions) => {
    route.bodyLimit ??= BODY_LIMIT
    // Query strings here carry codes and states (the callback's upstream code, above all): the
    // request log gets the path only.
    route.logSerializers = { ...route.logSerializers, req: pathOnly }
    // One error shape for every JSON error of the scope; a route's own 4xx/5xx schemas come first.
    // The browser routes' pages are text/html strings, which Fastify sends without serialising.
    const response = route.schema?.response as Record<string, unknown> | undefined
    route.schema = { ...route.schema, response: { '4xx': OAuthErrorResponse, '5xx': OAuthErrorResponse, ...response } }
  })
  // Telemetry: learn each route's rate-limit budget, wrap flow-step handlers in spans.
  const telemetry = deps.telemetry
  if (telemetry !== undefined) {
    fastify.addHook('onRoute', (route: RouteOptions) => { telemetry.onRoute(route, limits.budgetOf(route)) })
  }
  // Callback style: no promise per response for four header writes.
  fastify.addHook('onSend', (_request, reply, payload, done) => {
    reply.header('x-content-type-options', 'nosniff')
    reply.header('referrer-policy', 'no-referrer')
    if (config.hsts) reply.header('strict-transport-security', 'max-age=31536000')
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store')
    done(null, payload)
  })

  await limits.install(fastify)

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
  await fastify.register(metadataRoutes, { config, limits })
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
