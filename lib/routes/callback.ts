import Type from 'typebox'
import type { FastifyPluginAsync } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { OAuthError, type OAuthErrorCode } from '../errors.js'
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

const CallbackQuery = Type.Object({
  // The provider's own parameters (code, iss, error, ...) are read from the URL by the provider.
  state: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())]))
})

/** Page titles for the errors that come before a client is known (the flow cannot redirect them). */
const titles: Partial<Record<OAuthErrorCode, string>> = {
  invalid_request: 'Sign-in failed',
  invalid_grant: 'Sign-in expired',
  access_denied: 'Sign-in refused'
}

/** GET /oauth/callback: where the identity provider sends the browser back. */
export const callbackRoutes: FastifyPluginAsync<CallbackRouteDeps> = async (plugin, { config, flow, signer, style, now, limits }) => {
  const fastify = plugin.withTypeProvider<TypeBoxTypeProvider>()
  const names = cookieNames(config)
  fastify.get(`${config.basePath}/oauth/callback`, {
    schema: { querystring: CallbackQuery },
    config: limits.route('authorize')
  }, async (request, reply) => {
    const consent = readConsent(request, signer, names, now())
    let location: string
    try {
      location = await flow.upstream.callback({
        state: request.query.state,
        callbackUrl: new URL(request.url, config.origin),
        browserSecret: consent?.b
      })
    } catch (err) {
      if (!(err instanceof OAuthError)) throw err
      if (err.redirect !== undefined) location = err.redirect
      else {
        const title = titles[err.error]
        if (title === undefined) throw err
        return sendPage(reply, style, err.statusCode, errorPage(style, config, title, err.description))
      }
    }
    return reply.header('cache-control', 'no-store').redirect(location, 302)
  })
}
