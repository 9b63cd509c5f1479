import cookie from '@fastify/cookie'
import formbody from '@fastify/formbody'
import type { FastifyPluginAsync } from 'fastify'
import { oauthErrorHandler } from '../errors.js'
import { authorizeRoutes, type AuthorizeRouteDeps } from './authorize.js'
import { callbackRoutes } from './callback.js'
import { tokenRoutes, type TokenRouteDeps } from './token.js'
import { registerRoutes, type RegisterRouteDeps } from './register.js'
import { revokeRoutes, type RevokeRouteDeps } from './revoke.js'
import { introspectRoutes } from './introspect.js'

export type OAuthRouteDeps = AuthorizeRouteDeps & TokenRouteDeps & RegisterRouteDeps & RevokeRouteDeps

/** Body limit for OAuth endpoints: their requests are a few hundred bytes. */
const BODY_LIMIT = 64 * 1024

/**
 * The encapsulated context of every OAuth endpoint: form bodies, cookies, and the error handler that
 * turns anything thrown (validation included) into the RFC 6749 error shape.
 */
export const oauthRoutes: FastifyPluginAsync<OAuthRouteDeps> = async (fastify, deps) => {
  await fastify.register(formbody, { bodyLimit: BODY_LIMIT })
  await fastify.register(cookie)
  fastify.setErrorHandler(oauthErrorHandler)
  await fastify.register(authorizeRoutes, deps)
  await fastify.register(callbackRoutes, deps)
  await fastify.register(tokenRoutes, deps)
  await fastify.register(revokeRoutes, deps)
  await fastify.register(introspectRoutes, deps)
  if (deps.config.registration.mode !== 'off') await fastify.register(registerRoutes, deps)
}
