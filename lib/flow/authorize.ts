import { OAuthError, type OAuthErrorCode } from '../errors.js'
import type { ClientRecord } from '../storage/contract.js'
import { isValidChallenge, type PkceMethod } from '../oauth/pkce.js'
import { isLoopbackRedirect, matchRedirectUri } from '../oauth/redirect.js'
import { matchResource } from '../oauth/resource.js'
import { decideClientScopes } from '../oauth/scopes.js'
import { Consent } from './consent.js'
import { redirectableError, type ResponseTarget, type ValidatedAuthorization } from './request.js'
import { UpstreamLogin, type UpstreamLoginDeps } from './upstream.js'

/** The upstream login's dependencies, and the client lookup. */
export interface FlowDeps extends UpstreamLoginDeps {
  /** Resolves a client id (store, then client ID metadata documents when enabled). */
  findClient: (clientId: string) => Promise<ClientRecord | null>
}

/** The parameters of an authorization request that the flow reads. */
export type AuthorizationParameter =
  'client_id' | 'redirect_uri' | 'response_type' | 'state' | 'scope' | 'code_challenge' | 'code_challenge_method' | 'resource'

/** An authorization request (RFC 6749 §4.1.1, RFC 7636, RFC 8707): each parameter given at most once. */
export interface AuthorizationInput {
  clientId?: string
  redirectUri?: string
  responseType?: string
  state?: string
  scope?: string
  codeChallenge?: string
  codeChallengeMethod?: string
  resource?: string
  /** Parameters sent more than once (absent above): refused, never merged (RFC 6749 §3.1). */
  repeated: ReadonlySet<AuthorizationParameter>
}

/** The client and the redirect URI it asked for: known before anything may be sent back to it. */
export interface AuthorizationTarget extends ResponseTarget {
  client: ClientRecord
}

const MAX_STATE = 2048

/**
 * The browser flow, provider-agnostic: validating the authorization request (here), the user's
 * consent (`consent`) and the upstream login (`upstream`).
 */
export class AuthorizationFlow {
  readonly #d: FlowDeps
  readonly consent: Consent
  readonly upstream: UpstreamLogin

  constructor (deps: FlowDeps) {
    this.#d = deps
    this.consent = new Consent(deps)
    this.upstream = new UpstreamLogin(deps)
  }

  /**
   * The client and its redirect URI. An error about either is shown to the user, never redirected
   * (RFC 6749 §4.1.2.1): throws an OAuthError without a redirect.
   */
  async target (input: AuthorizationInput): Promise<AuthorizationTarget> {
    if (input.repeated.has('client_id')) throw new OAuthError('invalid_request', 'client_id was given more than once.')
    if (input.clientId === undefined || input.clientId === '') throw new OAuthError('invalid_request', 'The request has no client_id.')
    const unknown = (description: string, cause?: unknown) => new OAuthError('invalid_client', description, { statusCode: 400, cause })
    if (input.clientId.length > 2048) throw unknown('The client_id is not valid.')
    let client: ClientRecord | null
    try {
      client = await this.#d.findClient(input.clientId)
    } catch (err) {
      if (err instanceof OAuthError && err.statusCode < 500) throw unknown(err.message, err)
      throw err
    }
    if (client === null) throw unknown('This application is not registered with this server.')

    if (input.repeated.has('redirect_uri')) throw new OAuthError('invalid_request', 'redirect_uri was given more than once.')
    let redirectUri = input.redirectUri
    if (redirectUri === undefined || redirectUri === '') {
      // OAuth 2.1: optional when exactly one is registered and it is not a loopback pattern.
      if (client.redirectUris.length === 1 && !isLoopbackRedirect(client.redirectUris[0] as string)) redirectUri = client.redirectUris[0] as string
      else throw new OAuthError('invalid_request', 'The request has no redirect_uri.')
    }
    if (!matchRedirectUri(client.redirectUris, redirectUri)) {
      this.#d.auditor.emit('invalid_redirect', { clientId: client.clientId })
      throw new OAuthError('invalid_redirect_uri', 'The redirect_uri is not registered for this application.')
    }
    const target: AuthorizationTarget = { client, redirectUri }
    if (input.state !== undefined) target.state = input.state
    return target
  }

  /** Everything else about the request, for its target. Throws a redirectable OAuthError. */
  async validate (target: AuthorizationTarget, input: AuthorizationInput): Promise<ValidatedAuthorization> {
    const { config } = this.#d
    const { client } = target
    const fail = (error: OAuthErrorCode, description: string) => redirectableError(target, config.issuer, error, description)

    for (const name of ['response_type', 'state', 'scope', 'code_challenge', 'code_challenge_method'] as const) {
      if (input.repeated.has(name)) throw fail('invalid_request', `${name} was given more than once`)
    }
    if (target.state !== undefined && target.state.length > MAX_STATE) throw fail('invalid_request', 'state is too long')

    if (input.responseType === undefined) throw fail('invalid_request', 'response_type is required')
    if (input.responseType !== 'code') throw fail('unsupported_response_type', 'Only response_type=code is supported')
    if (!client.responseTypes.includes('code')) throw fail('unauthorized_client', 'This client may not use the authorization code flow')

    const challenge = input.codeChallenge
    const methodParam = input.codeChallengeMethod
    let method: PkceMethod
    if (challenge === undefined || challenge === '') {
      if (config.pkce.required) throw fail('invalid_request', 'code_challenge is required (PKCE with S256)')
      throw fail('invalid_request', 'Requests without PKCE are not supported by this server')
    }
    if (methodParam === 'S256') method = 'S256'
    else if (config.pkce.allowPlain && (methodParam === 'plain' || methodParam === undefined)) method = 'plain'
    else if (methodParam === undefined) {
      // RFC 7636 reads an absent method as "plain", which this server refuses: say so rather than guess.
      throw fail('invalid_request', 'code_challenge_method is required and must be S256')
    } else throw fail('invalid_request', 'code_challenge_method must be S256')
    if (!isValidChallenge(challenge, method)) throw fail('invalid_request', 'code_challenge is malformed')

    let resource: string
    if (input.repeated.has('resource')) {
      throw fail('invalid_target', 'Exactly one resource may be requested')
    } else if (input.resource === undefined) {
      if (config.resources.length !== 1) throw fail('invalid_target', 'resource is required: this server protects several resources')
      resource = (config.resources[0] as { resource: string }).resource
    } else {
      const match = matchResource(input.resource, config.resources)
      if (match === null) throw fail('invalid_target', 'The resource is not protected by this server')
      resource = match.resource
    }
    const resourceConfig = config.resources.find(r => r.resource === resource)
    const supported = resourceConfig?.scopes ?? config.scopes
    const scopes = decideClientScopes(input.scope, supported, config.defaultScopes.filter(s => supported.includes(s)), client)
    if (!scopes.ok) throw fail('invalid_scope', scopes.description)
    if (scopes.scopes.length === 0) throw fail('invalid_scope', 'No scope could be granted')

    const request: ValidatedAuthorization = {
      clientId: client.clientId,
      redirectUri: target.redirectUri,
      codeChallenge: challenge,
      codeChallengeMethod: method,
      scopes: scopes.scopes,
      resource
    }
    if (target.state !== undefined) request.state = target.state
    this.#d.auditor.emit('authorization_started', { clientId: client.clientId })
    return request
  }
}
