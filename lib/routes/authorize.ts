import type {} from '@fastify/cookie'
import { randomBytes } from 'node:crypto'
import Type from 'typebox'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { AuthorizationFlow, ValidatedAuthorization } from '../flow/authorize.js'
import { isLoopbackRedirect, matchRedirectUri } from '../oauth/redirect.js'
import { hashToken, safeEqual } from '../oauth/tokens.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Signer } from '../security/signing.js'
import type { ClientRecord } from '../storage/contract.js'
import { clientErrorPage, consentPage, destinationOf, errorPage, sendPage, type ClientView, type PageStyle } from './html.js'
import { cookieNames, readConsent, writeConsent, type ConsentCookie } from './cookies.js'
import type { RouteLimits } from './limits.js'

export interface AuthorizeRouteDeps {
  limits: RouteLimits
  config: ResolvedConfig
  flow: AuthorizationFlow
  signer: Signer
  style: PageStyle
  now: () => number
  findClient: (clientId: string) => Promise<ClientRecord | null>
}

/**
 * A remembered approval covers one client, one resource and a set of scopes: a request for more
 * scopes, or for another resource, shows the consent page again.
 */
function approvalKey (req: ValidatedAuthorization): string {
  return [req.clientId, req.resource, [...req.scopes].sort().join(' ')].join('\n')
}

function isApproved (approvals: string[], req: ValidatedAuthorization): boolean {
  return approvals.some(a => {
    const [clientId, resource, scopes] = a.split('\n')
    if (clientId !== req.clientId || resource !== req.resource || scopes === undefined) return false
    const granted = scopes.split(' ')
    return req.scopes.every(s => granted.includes(s))
  })
}

/**
 * A public client redirecting to a loopback address or a private-use scheme: any program on the
 * device can use its client id and receive its codes, so nothing proves that the app asking now is
 * the one the user approved before (RFC 8252 §8.6). A client ID metadata document does not change
 * that: its host vouches for the metadata, not for the program listening on the loopback port or
 * claiming the scheme.
 */
function isNativeRequest (client: ClientRecord, req: ValidatedAuthorization): boolean {
  if (client.tokenEndpointAuthMethod !== 'none') return false
  const scheme = new URL(req.redirectUri).protocol
  return isLoopbackRedirect(req.redirectUri) || (scheme !== 'https:' && scheme !== 'http:')
}

/**
 * Errors may go straight back to clients the operator configured, or that the user approved in this
 * browser; for the others an automatic redirect would be an open redirector.
 */
function redirectTrusted (client: ClientRecord, consent: ConsentCookie | null): boolean {
  return client.source === 'static' || (consent?.c ?? []).some(a => a.split('\n')[0] === client.clientId)
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
  /** The form's single-use id (AuthorizationFlow.openConsentForm). */
  f: string
}

const ConsentBody = Type.Object({
  request: Type.String({ maxLength: 16384 }),
  csrf: Type.String({ maxLength: 200 }),
  decision: Type.Union([Type.Literal('approve'), Type.Literal('deny')])
})

/**
 * GET /oauth/authorize validates the request and shows the consent page (or, for a client this
 * browser approved before, goes straight upstream). POST /oauth/consent takes the decision.
 */
export const authorizeRoutes: FastifyPluginAsync<AuthorizeRouteDeps> = async (fastify, deps) => {
  const { config, flow, signer, style, now, limits } = deps
  const names = cookieNames(config)
  const consentAction = `${config.basePath}/oauth/consent`

  const page = (reply: FastifyReply, status: number, title: string, description: string) =>
    sendPage(reply, style, status, errorPage(style, config, title, description))

  const goUpstream = async (request: FastifyRequest, reply: FastifyReply, req: ValidatedAuthorization) => {
    const consent = readConsent(request, signer, names, now())
    const secret = consent?.b ?? randomBytes(32).toString('base64url')
    const entry = approvalKey(req)
    const approved = [entry, ...(consent?.c ?? []).filter(c => c !== entry)].slice(0, 20)
    writeConsent(reply, signer, names, config, { b: secret, c: approved }, now())
    const url = await flow.startUpstream(req, hashToken(secret))
    return reply.code(303).header('cache-control', 'no-store').redirect(url, 303)
  }

  fastify.get(`${config.basePath}/oauth/authorize`, {
    schema: { querystring: Type.Record(Type.String(), Type.Union([Type.String(), Type.Array(Type.String())])) },
    config: limits.route('authorize')
  }, async (request, reply) => {
    const decision = await flow.validate(request.query as Record<string, unknown>)
    if (decision.kind === 'page') return page(reply, decision.status, decision.title, decision.description)
    const consent = readConsent(request, signer, names, now())
    if (decision.kind === 'redirect') {
      if (redirectTrusted(decision.client, consent)) return reply.header('cache-control', 'no-store').redirect(decision.url, 302)
      return sendPage(reply, style, 400, clientErrorPage(style, config, {
        ...clientView(decision.client),
        error: decision.error,
        description: decision.description,
        link: decision.url,
        destination: destinationOf(decision.url)
      }))
    }
    const { request: req, client } = decision

    const remember = config.consent.rememberNativeClients || !isNativeRequest(client, req)
    if (consent !== null && remember && isApproved(consent.c, req)) return goUpstream(request, reply, req)

    let csrfCookie = request.cookies[names.csrf]
    if (csrfCookie === undefined || csrfCookie.length < 32 || csrfCookie.length > 64) {
      csrfCookie = randomBytes(32).toString('base64url')
      reply.setCookie(names.csrf, csrfCookie, {
        path: '/', httpOnly: true, secure: config.secureCookies, sameSite: 'lax'
      })
    }
    const form = await flow.openConsentForm(req)
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
    const body = request.body as { request: string, csrf: string, decision: 'approve' | 'deny' }
    const csrfCookie = request.cookies[names.csrf]
    if (csrfCookie === undefined || !safeEqual(body.csrf, signer.mac('csrf', csrfCookie))) {
      return page(reply, 403, 'Form expired', 'This consent form is no longer valid (cookies may be blocked). Start again from the application.')
    }
    const signed = signer.unsign<SignedRequest>('authorization-request', body.request)
    if (signed === null || typeof signed.exp !== 'number' || signed.exp <= now()) {
      return page(reply, 400, 'Form expired', 'This consent form has expired. Start again from the application.')
    }
    const req = signed.r
    const client = await deps.findClient(req.clientId)
    if (client === null || !matchRedirectUri(client.redirectUris, req.redirectUri)) {
      return page(reply, 400, 'Unknown application', 'This application is no longer registered with this server.')
    }
    if (typeof signed.f !== 'string' || !await flow.takeConsentForm(signed.f)) {
      return page(reply, 400, 'Form already used', 'This consent form was already used (or has expired). Start again from the application.')
    }
    if (body.decision === 'deny') return reply.header('cache-control', 'no-store').redirect(flow.denied(req), 303)
    return goUpstream(request, reply, req)
  })
}
