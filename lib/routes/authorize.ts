import type {} from '@fastify/cookie'
import { randomBytes } from 'node:crypto'
import Type, { type Static } from 'typebox'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { OAuthError, type OAuthErrorCode } from '../errors.js'
import type { AuthorizationFlow, AuthorizationInput, AuthorizationParameter, AuthorizationTarget } from '../flow/authorize.js'
import type { ValidatedAuthorization } from '../flow/request.js'
import { hashToken, safeEqual } from '../oauth/tokens.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Signer } from '../security/signing.js'
import type { ClientRecord } from '../storage/contract.js'
import { clientErrorPage, consentPage, destinationOf, errorPage, sendPage, type ClientView, type PageStyle } from './html.js'
import { cookieNames, readConsent, writeConsent } from './cookies.js'
import type { RouteLimits } from './limits.js'

export interface AuthorizeRouteDeps {
  limits: RouteLimits
  config: ResolvedConfig
  flow: AuthorizationFlow
  signer: Signer
  style: PageStyle
  now: () => number
}

function clientView (client: ClientRecord): ClientView {
  return {
    clientName: client.clientName ?? client.clientId,
    nameVerified: client.source !== 'dcr',
    ...(client.source === 'cimd' ? { verifiedHost: new URL(client.clientId).host } : {}),
    clientId: client.clientId
  }
}

interface SignedRequest {
  r: ValidatedAuthorization
  exp: number
  /** The form's single-use id (Consent.open). */
  f: string
}

const Parameter = Type.Union([Type.String(), Type.Array(Type.String())])
const AuthorizeQuery = Type.Object({
  client_id: Type.Optional(Parameter),
  redirect_uri: Type.Optional(Parameter),
  response_type: Type.Optional(Parameter),
  state: Type.Optional(Parameter),
  scope: Type.Optional(Parameter),
  code_challenge: Type.Optional(Parameter),
  code_challenge_method: Type.Optional(Parameter),
  resource: Type.Optional(Parameter)
})

/**
 * The one place the query is read raw: a parameter sent twice arrives as an array, which the flow
 * must refuse (RFC 6749 §3.1), not merge or pick from; so each may be a string or an array here.
 */
function authorizationInput (query: Static<typeof AuthorizeQuery>): AuthorizationInput {
  const repeated = new Set<AuthorizationParameter>()
  const one = (name: AuthorizationParameter): string | undefined => {
    const value = query[name]
    if (!Array.isArray(value)) return value
    repeated.add(name)
    return undefined
  }
  return {
    clientId: one('client_id'),
    redirectUri: one('redirect_uri'),
    responseType: one('response_type'),
    state: one('state'),
    scope: one('scope'),
    codeChallenge: one('code_challenge'),
    codeChallengeMethod: one('code_challenge_method'),
    resource: one('resource'),
    repeated
  }
}

const ConsentBody = Type.Object({
  request: Type.String({ maxLength: 16384 }),
  csrf: Type.String({ maxLength: 200 }),
  decision: Type.Union([Type.Literal('approve'), Type.Literal('deny')])
})

/** Page titles for the errors the flow shows to the user (those it may not redirect). */
const authorizeTitles: Partial<Record<OAuthErrorCode, string>> = {
  invalid_request: 'Invalid request',
  invalid_client: 'Unknown application',
  invalid_redirect_uri: 'Invalid redirect'
}

/**
 * GET /oauth/authorize validates the request and shows the consent page (or, for a client this
 * browser approved before, goes straight upstream). POST /oauth/consent takes the decision.
 */
export const authorizeRoutes: FastifyPluginAsync<AuthorizeRouteDeps> = async (plugin, deps) => {
  const fastify = plugin.withTypeProvider<TypeBoxTypeProvider>()
  const { config, flow, signer, style, now, limits } = deps
  const names = cookieNames(config)
  const consentAction = `${config.basePath}/oauth/consent`

  const page = (reply: FastifyReply, status: number, title: string, description: string) =>
    sendPage(reply, style, status, errorPage(style, config, title, description))

  /** A page for an error the flow threw for the user; anything else goes to the scope's handler. */
  const shown = (reply: FastifyReply, err: unknown, titles: Partial<Record<OAuthErrorCode, string>>) => {
    const title = err instanceof OAuthError && !err.redirectable ? titles[err.error] : undefined
    if (title === undefined) throw err
    const { statusCode, description } = err as OAuthError
    return page(reply, statusCode, title, description)
  }

  const goUpstream = async (request: FastifyRequest, reply: FastifyReply, req: ValidatedAuthorization) => {
    const consent = readConsent(request, signer, names, now())
    const secret = consent?.b ?? randomBytes(32).toString('base64url')
    writeConsent(reply, signer, names, config, { b: secret, c: flow.consent.approve(consent?.c ?? [], req) }, now())
    let url: string
    try {
      url = await flow.upstream.start(req, hashToken(secret))
    } catch (err) {
      if (!(err instanceof OAuthError) || err.redirect === undefined) throw err
      url = err.redirect
    }
    return reply.code(303).header('cache-control', 'no-store').redirect(url, 303)
  }

  fastify.get(`${config.basePath}/oauth/authorize`, {
    schema: { querystring: AuthorizeQuery },
    config: limits.route('authorize')
  }, async (request, reply) => {
    const input = authorizationInput(request.query)
    let target: AuthorizationTarget
    let req: ValidatedAuthorization
    try {
      target = await flow.target(input)
    } catch (err) {
      return shown(reply, err, authorizeTitles)
    }
    const { client } = target
    const consent = readConsent(request, signer, names, now())
    const approvals = consent?.c ?? []
    try {
      req = await flow.validate(target, input)
    } catch (err) {
      if (!(err instanceof OAuthError) || err.redirect === undefined) throw err
      if (flow.consent.trusts(client, approvals)) return reply.header('cache-control', 'no-store').redirect(err.redirect, 302)
      return sendPage(reply, style, 400, clientErrorPage(style, config, {
        ...clientView(client),
        error: err.error,
        description: err.description,
        link: err.redirect,
        destination: destinationOf(err.redirect)
      }))
    }

    if (consent !== null && flow.consent.remembered(approvals, client, req)) return goUpstream(request, reply, req)

    let csrfCookie = request.cookies[names.csrf]
    if (csrfCookie === undefined || csrfCookie.length < 32 || csrfCookie.length > 64) {
      csrfCookie = randomBytes(32).toString('base64url')
      reply.setCookie(names.csrf, csrfCookie, {
        path: '/', httpOnly: true, secure: config.secureCookies, sameSite: 'lax'
      })
    }
    const form = await flow.consent.open(req)
    const signed = signer.sign('authorization-request', { r: req, exp: now() + config.ttl.flow * 1000, f: form } satisfies SignedRequest)
    return sendPage(reply, style, 200, consentPage(style, config, {
      ...clientView(client),
      destination: destinationOf(req.redirectUri),
      scopes: req.scopes,
      resource: req.resource,
      allLoopback: client.redirectUris.every(u => /^http:\/\/(127\.0\.0\.1|\[::1\]|localhost)[:/]/i.test(u)),
      request: signed,
      csrf: signer.mac('csrf', csrfCookie),
      action: consentAction
    }))
  })

  fastify.post(consentAction, {
    schema: { body: ConsentBody },
    config: limits.route('authorize'),
    // The page is ours: a submission from anywhere else is refused whatever it carries.
    attachValidation: true
  }, async (request, reply) => {
    if (request.validationError) return page(reply, 400, 'Invalid form', 'The consent form was incomplete. Start again from the application.')
    const site = request.headers['sec-fetch-site']
    const origin = request.headers.origin
    if ((site !== undefined && site !== 'same-origin') || (origin !== undefined && origin !== 'null' && origin !== config.origin)) {
      return page(reply, 403, 'Request refused', 'The consent form was submitted from another site.')
    }
    const body = request.body
    const csrfCookie = request.cookies[names.csrf]
    if (csrfCookie === undefined || !safeEqual(body.csrf, signer.mac('csrf', csrfCookie))) {
      return page(reply, 403, 'Form expired', 'This consent form is no longer valid (cookies may be blocked). Start again from the application.')
    }
    const signed = signer.unsign<SignedRequest>('authorization-request', body.request)
    if (signed === null || typeof signed.exp !== 'number' || signed.exp <= now()) {
      return page(reply, 400, 'Form expired', 'This consent form has expired. Start again from the application.')
    }
    const req = signed.r
    if (!await flow.consent.stillRegistered(req)) {
      return page(reply, 400, 'Unknown application', 'This application is no longer registered with this server.')
    }
    if (!await flow.consent.take(typeof signed.f === 'string' ? signed.f : undefined)) {
      return page(reply, 400, 'Form already used', 'This consent form was already used (or has expired). Start again from the application.')
    }
    if (body.decision === 'deny') return reply.header('cache-control', 'no-store').redirect(flow.consent.denied(req), 303)
    return goUpstream(request, reply, req)
  })
}
