import { randomBytes } from 'node:crypto'
import { OAuthError, type OAuthErrorCode } from '../errors.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Provider, UpstreamTokens } from '../providers/types.js'
import { UpstreamError } from '../providers/types.js'
import type { Auditor } from '../security/audit.js'
import type { KeyRing } from '../security/keyring.js'
import type { ClientRecord, CodeRecord, FlowRecord, Store } from '../storage/contract.js'
import type { GrantService } from '../token/issue.js'
import { isValidChallenge, type PkceMethod } from '../oauth/pkce.js'
import { isLoopbackRedirect, matchRedirectUri } from '../oauth/redirect.js'
import { matchResource } from '../oauth/resource.js'
import { decideClientScopes } from '../oauth/scopes.js'
import { generateId, generateToken, hashToken, looksLike, safeEqual } from '../oauth/tokens.js'
import { loginUpstream } from '../token/upstream.js'

/** An authorization request that passed every check; what the consent page shows and signs. */
export interface ValidatedAuthorization {
  clientId: string
  redirectUri: string
  state?: string
  codeChallenge: string
  codeChallengeMethod: PkceMethod
  scopes: string[]
  resource: string
}

export type AuthorizeDecision =
  /** About the client or its redirect URI: shown to the user, never redirected (RFC 6749 §4.1.2.1). */
  | { kind: 'page', status: number, title: string, description: string }
  /**
   * Everything else goes back to the client: at once when the client is trusted, else through a
   * page with a link (the route decides; it knows what this browser approved).
   */
  | { kind: 'redirect', url: string, client: ClientRecord, error: OAuthErrorCode, description: string }
  | { kind: 'ok', request: ValidatedAuthorization, client: ClientRecord }

export type CallbackDecision =
  | { kind: 'page', status: number, title: string, description: string }
  | { kind: 'redirect', url: string }

export interface FlowDeps {
  config: ResolvedConfig
  store: Store
  provider: Provider | undefined
  grants: GrantService
  keyRing: KeyRing
  auditor: Auditor
  now: () => number
  /** Family revocation, including the upstream grant. */
  revokeGrant: (grantId: string) => Promise<boolean>
  /** Resolves a client id (store, then client ID metadata documents when enabled). */
  findClient: (clientId: string) => Promise<ClientRecord | null>
}

const MAX_STATE = 2048

function consentFormKey (id: string): string {
  return hashToken(`consent-form:${id}`)
}

/** Add OAuth response parameters to a redirect URI, keeping its own query (RFC 6749 §3.1.2). */
export function clientRedirect (redirectUri: string, params: Record<string, string | undefined>): string {
  const url = new URL(redirectUri)
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v)
  return url.href
}

function single (params: Record<string, unknown>, name: string): { value?: string, repeated: boolean, invalid: boolean } {
  const v = params[name]
  if (v === undefined) return { repeated: false, invalid: false }
  if (Array.isArray(v)) return { repeated: true, invalid: false }
  if (typeof v !== 'string') return { repeated: false, invalid: true }
  return { value: v, repeated: false, invalid: false }
}

/**
 * The authorization code flow, provider-agnostic: validating the authorization request, starting
 * the upstream leg after consent, completing it at the callback, and exchanging the code.
 */
export class AuthorizationFlow {
  readonly #d: FlowDeps

  constructor (deps: FlowDeps) {
    this.#d = deps
  }

  async validate (params: Record<string, unknown>): Promise<AuthorizeDecision> {
    const { config } = this.#d
    const page = (title: string, description: string, status = 400): AuthorizeDecision => ({ kind: 'page', status, title, description })

    const clientId = single(params, 'client_id')
    if (clientId.repeated) return page('Invalid request', 'client_id was given more than once.')
    if (clientId.value === undefined || clientId.value === '' || clientId.invalid) return page('Invalid request', 'The request has no client_id.')
    if (clientId.value.length > 2048) return page('Unknown application', 'The client_id is not valid.')
    let client: ClientRecord | null
    try {
      client = await this.#d.findClient(clientId.value)
    } catch (err) {
      if (err instanceof OAuthError && err.statusCode < 500) return page('Unknown application', err.message)
      throw err
    }
    if (client === null) return page('Unknown application', 'This application is not registered with this server.')

    const redirect = single(params, 'redirect_uri')
    if (redirect.repeated) return page('Invalid request', 'redirect_uri was given more than once.')
    let redirectUri = redirect.value
    if (redirectUri === undefined || redirectUri === '') {
      // OAuth 2.1: optional when exactly one is registered and it is not a loopback pattern.
      if (client.redirectUris.length === 1 && !isLoopbackRedirect(client.redirectUris[0] as string)) redirectUri = client.redirectUris[0] as string
      else return page('Invalid request', 'The request has no redirect_uri.')
    }
    if (redirect.invalid || !matchRedirectUri(client.redirectUris, redirectUri)) {
      this.#d.auditor.emit('invalid_redirect', { clientId: client.clientId })
      return page('Invalid redirect', 'The redirect_uri is not registered for this application.')
    }

    const state = single(params, 'state')
    const stateValue = state.repeated || state.invalid ? undefined : state.value
    const fail = (error: OAuthErrorCode, description: string): AuthorizeDecision =>
      ({ kind: 'redirect', url: clientRedirect(redirectUri, { error, error_description: description, state: stateValue, iss: config.issuer }), client, error, description })

    for (const name of ['response_type', 'state', 'scope', 'code_challenge', 'code_challenge_method']) {
      const p = single(params, name)
      if (p.repeated) return fail('invalid_request', `${name} was given more than once`)
      if (p.invalid) return fail('invalid_request', `${name} is malformed`)
    }
    if (stateValue !== undefined && stateValue.length > MAX_STATE) return fail('invalid_request', 'state is too long')

    const responseType = single(params, 'response_type').value
    if (responseType === undefined) return fail('invalid_request', 'response_type is required')
    if (responseType !== 'code') return fail('unsupported_response_type', 'Only response_type=code is supported')
    if (!client.responseTypes.includes('code')) return fail('unauthorized_client', 'This client may not use the authorization code flow')

    const challenge = single(params, 'code_challenge').value
    const methodParam = single(params, 'code_challenge_method').value
    let method: PkceMethod
    if (challenge === undefined || challenge === '') {
      if (config.pkce.required) return fail('invalid_request', 'code_challenge is required (PKCE with S256)')
      return fail('invalid_request', 'Requests without PKCE are not supported by this server')
    }
    if (methodParam === 'S256') method = 'S256'
    else if (config.pkce.allowPlain && (methodParam === 'plain' || methodParam === undefined)) method = 'plain'
    else if (methodParam === undefined) {
      // RFC 7636 reads an absent method as "plain", which this server refuses: say so rather than guess.
      return fail('invalid_request', 'code_challenge_method is required and must be S256')
    } else return fail('invalid_request', 'code_challenge_method must be S256')
    if (!isValidChallenge(challenge, method)) return fail('invalid_request', 'code_challenge is malformed')

    const rawResource = params.resource
    let resource: string
    if (rawResource === undefined) {
      if (config.resources.length !== 1) return fail('invalid_target', 'resource is required: this server protects several resources')
      resource = (config.resources[0] as { resource: string }).resource
    } else if (typeof rawResource !== 'string') {
      return fail('invalid_target', 'Exactly one resource may be requested')
    } else {
      const match = matchResource(rawResource, config.resources)
      if (match === null) return fail('invalid_target', 'The resource is not protected by this server')
      resource = match.resource
    }
    const resourceConfig = config.resources.find(r => r.resource === resource)
    const supported = resourceConfig?.scopes ?? config.scopes
    const scopes = decideClientScopes(single(params, 'scope').value, supported, config.defaultScopes.filter(s => supported.includes(s)), client)
    if (!scopes.ok) return fail('invalid_scope', scopes.description)
    if (scopes.scopes.length === 0) return fail('invalid_scope', 'No scope could be granted')

    const request: ValidatedAuthorization = {
      clientId: client.clientId,
      redirectUri,
      codeChallenge: challenge,
      codeChallengeMethod: method,
      scopes: scopes.scopes,
      resource
    }
    if (stateValue !== undefined) request.state = stateValue
    this.#d.auditor.emit('authorization_started', { clientId: client.clientId })
    return { kind: 'ok', request, client }
  }

  /** Deny at the consent page: back to the client with access_denied. */
  denied (request: ValidatedAuthorization): string {
    this.#d.auditor.emit('consent_denied', { clientId: request.clientId })
    return clientRedirect(request.redirectUri, {
      error: 'access_denied', error_description: 'The user denied the request', state: request.state, iss: this.#d.config.issuer
    })
  }

  /**
   * A consent form answers once. Showing it saves a take-once record under the form's id (the flow
   * store's take-once, atomic in every store); the first submission takes it, so a form sent twice,
   * in parallel or later, cannot start a second upstream login and mint a second code.
   */
  async openConsentForm (request: ValidatedAuthorization): Promise<string> {
    const now = this.#d.now()
    const id = randomBytes(32).toString('base64url')
    // Not a flow the callback can take: its key is outside the flow-state key space, and an empty
    // binding matches no browser.
    await this.#d.store.saveFlow(consentFormKey(id), {
      ...request, upstreamVerifier: '', browserBinding: '', createdAt: now, expiresAt: now + this.#d.config.ttl.flow * 1000
    })
    return id
  }

  /** True for the first submission of the form, false for every later one (and after expiry). */
  async takeConsentForm (id: string): Promise<boolean> {
    return await this.#d.store.takeFlow(consentFormKey(id), this.#d.now()) !== null
  }

  /**
   * After consent: store the flow under a fresh upstream state and send the browser upstream with
   * our own PKCE verifier and nonce. `browserBinding` is the hash of the approving browser's secret.
   */
  async startUpstream (request: ValidatedAuthorization, browserBinding: string): Promise<string> {
    const { provider, config } = this.#d
    const failure = (error: OAuthErrorCode, description: string) => clientRedirect(request.redirectUri, {
      error, error_description: description, state: request.state, iss: config.issuer
    })
    if (provider === undefined) return failure('server_error', 'No identity provider is configured')
    this.#d.auditor.emit('consent_approved', { clientId: request.clientId })
    const now = this.#d.now()
    const key = generateToken('flowState')
    const flow: FlowRecord = {
      ...request,
      upstreamVerifier: randomBytes(32).toString('base64url'),
      upstreamNonce: randomBytes(16).toString('base64url'),
      browserBinding,
      createdAt: now,
      expiresAt: now + config.ttl.flow * 1000
    }
    let url: URL
    try {
      url = await provider.authorizationUrl({
        redirectUri: config.endpoints.callback,
        state: key,
        codeVerifier: flow.upstreamVerifier,
        nonce: flow.upstreamNonce as string
      })
    } catch (err) {
      const kind = err instanceof UpstreamError ? err.kind : 'invalid_response'
      this.#d.auditor.emit('upstream_failure', { provider: provider.name, kind, step: 'authorize' })
      return failure('temporarily_unavailable', 'The identity provider is unavailable; try again later')
    }
    await this.#d.store.saveFlow(hashToken(key), flow)
    return url.href
  }

  /** The upstream callback: take the flow once, check the browser, exchange upstream, issue our code. */
  async callback (query: Record<string, unknown>, callbackUrl: URL, browserSecret: string | undefined): Promise<CallbackDecision> {
    const { config, provider } = this.#d
    const page = (title: string, description: string, status = 400): CallbackDecision => ({ kind: 'page', status, title, description })
    const state = query.state
    if (typeof state !== 'string' || !looksLike('flowState', state)) {
      return page('Sign-in failed', 'This sign-in link is invalid. Start again from the application.')
    }
    const flow = await this.#d.store.takeFlow(hashToken(state), this.#d.now())
    if (flow === null) return page('Sign-in expired', 'This sign-in has expired or was already used. Start again from the application.')
    if (browserSecret === undefined || !safeEqual(hashToken(browserSecret), flow.browserBinding)) {
      this.#d.auditor.emit('browser_mismatch', { clientId: flow.clientId })
      return page('Sign-in refused', 'This sign-in was started in another browser. Start again from the application in this browser.', 403)
    }
    const back = (params: Record<string, string | undefined>): CallbackDecision => {
      this.#d.auditor.emit('callback_processed', { clientId: flow.clientId, outcome: params.code === undefined ? 'error' : 'success' })
      return { kind: 'redirect', url: clientRedirect(flow.redirectUri, { ...params, state: flow.state, iss: config.issuer }) }
    }
    if (provider === undefined) return back({ error: 'server_error', error_description: 'No identity provider is configured' })

    let tokens: UpstreamTokens
    let user
    try {
      ({ tokens, user } = await provider.exchangeCode({
        callbackUrl,
        redirectUri: config.endpoints.callback,
        state,
        codeVerifier: flow.upstreamVerifier,
        nonce: flow.upstreamNonce ?? ''
      }))
    } catch (err) {
      const kind = err instanceof UpstreamError ? err.kind : 'invalid_response'
      this.#d.auditor.emit('upstream_failure', { provider: provider.name, kind, step: 'callback' })
      switch (kind) {
        case 'access_denied':
          return back({ error: 'access_denied', error_description: 'The identity provider did not authorize the user' })
        case 'not_allowed':
          return back({ error: 'access_denied', error_description: err instanceof Error ? err.message : 'The user is not allowed' })
        case 'temporary':
          return back({ error: 'temporarily_unavailable', error_description: 'The identity provider is unavailable; try again later' })
        default:
          return back({ error: 'server_error', error_description: 'The identity provider\'s answer could not be accepted' })
      }
    }

    const now = this.#d.now()
    const grantId = generateId()
    const code = generateToken('authorizationCode')
    const record: CodeRecord = {
      clientId: flow.clientId,
      redirectUri: flow.redirectUri,
      codeChallenge: flow.codeChallenge,
      codeChallengeMethod: flow.codeChallengeMethod,
      scopes: flow.scopes,
      resource: flow.resource,
      grantId,
      userId: user.id,
      // The verified e-mail goes with the tokens: later refreshes tell it from an older version's.
      upstream: this.#d.keyRing.seal(loginUpstream(tokens, user.emailVerified === true ? user.email : undefined), grantId),
      provider: provider.name,
      issuedAt: now,
      expiresAt: now + config.ttl.code * 1000
    }
    // Only an address the provider verified: with self sign-up anyone can claim any address.
    if (user.email !== undefined && user.emailVerified === true) record.email = user.email
    await this.#d.store.saveCode(hashToken(code), record)
    this.#d.auditor.emit('login_succeeded', { clientId: flow.clientId, userId: user.id, provider: provider.name })
    return back({ code })
  }
}
