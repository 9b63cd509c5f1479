import Type from 'typebox'
import type { FastifyPluginAsync } from 'fastify'
import type { AuthorizationFlow } from '../flow/authorize.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Signer } from '../security/signing.js'
import { errorPage, sendPage, type PageStyle } from './html.js'
import { cookieNames, readConsent } from './cookies.js'
import type { RouteLimits } from './limits.js'

export interface CallbackRouteDeps {
  limits: RouteLimits
  config: ResolvedConfig
  flow: AuthorizationFlow
  signer: Signer
  style: PageStyle
  now: () => number
}

/** GET /oauth/callback: where the identity provider sends the browser back. */
export const callbackRoutes: FastifyPluginAsync<CallbackRouteDeps> = async (fastify, { config, flow, signer, style, now, limits }) => {
  const names = cookieNames(config)
  fastify.get(`${config.basePath}/oauth/callback`, {
    schema: { querystring: Type.Record(Type.String(), Type.Union([Type.String(), Type.Array(Type.String())])) },
    config: limits.route('authorize')
  }, async (request, reply) => {
    const consent = readConsent(request, signer, names, now())
    const url = new URL(request.url, config.origin)
    const decision = await flow.callback(request.query as Record<string, unknown>, url, consent?.b)
    if (decision.kind === 'page') {
      return sendPage(reply, style, decision.status, errorPage(style, config, decision.title, decision.description))
    }
    return reply.header('cache-control', 'no-store').redirect(decision.url, 302)
  })
}
