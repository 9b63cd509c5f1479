import { randomBytes } from 'node:crypto'
import { OAuthError, UpstreamError } from '../errors.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Provider, UpstreamTokens, UpstreamUser } from '../providers/types.js'
import type { Auditor } from '../security/audit.js'
import type { KeyRing } from '../security/keyring.js'
import type { CodeRecord, FlowRecord, Store } from '../storage/contract.js'
import { generateId, generateToken, hashToken, looksLike, matchesHash } from '../oauth/tokens.js'
import { loginUpstream } from '../token/upstream.js'
import { clientRedirect, redirectableError, type ValidatedAuthorization } from './request.js'

export interface UpstreamLoginDeps {
  config: ResolvedConfig
  store: Store
  provider: Provider | undefined
  keyRing: KeyRing
  auditor: Auditor
  now: () => number
}

export interface CallbackInput {
  /** The `state` query parameter; a repeated one (an array) names no flow. */
  state: string | string[] | undefined
  /** The full callback URL as the browser requested it: the provider reads its own parameters. */
  callbackUrl: URL
  /** The secret of the browser that arrived, from its consent cookie. */
  browserSecret: string | undefined
}

/**
 * The upstream leg of the flow: after consent, send the browser to the identity provider with our
 * own PKCE verifier, state and nonce; at the callback, take the flow once, check the browser,
 * exchange upstream and issue our authorization code.
 */
export class UpstreamLogin {
  readonly #d: UpstreamLoginDeps

  constructor (deps: UpstreamLoginDeps) {
    this.#d = deps
  }

  /**
   * Store the flow under a fresh upstream state and return the provider's authorization URL.
   * `browserBinding` is the hash of the approving browser's secret. Throws a redirectable OAuthError.
   */
  async start (request: ValidatedAuthorization, browserBinding: string): Promise<string> {
    const { provider, config } = this.#d
    if (provider === undefined) throw redirectableError(request, config.issuer, 'server_error', 'No identity provider is configured')
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
      throw redirectableError(request, config.issuer, 'temporarily_unavailable', 'The identity provider is unavailable; try again later')
    }
    await this.#d.store.saveFlow(hashToken(key), flow)
    return url.href
  }

  /**
   * The upstream callback. Returns the client's redirect URI with our code. Throws an OAuthError:
   * before the flow and its browser are known, one for the user (no client to send it to); after,
   * a redirectable one.
   */
  async callback ({ state, callbackUrl, browserSecret }: CallbackInput): Promise<string> {
    const { config, provider } = this.#d
    if (typeof state !== 'string' || !looksLike('flowState', state)) {
      throw new OAuthError('invalid_request', 'This sign-in link is invalid. Start again from the application.')
    }
    const flow = await this.#d.store.takeFlow(hashToken(state), this.#d.now())
    if (flow === null) throw new OAuthError('invalid_grant', 'This sign-in has expired or was already used. Start again from the application.')
    if (browserSecret === undefined || !matchesHash(browserSecret, flow.browserBinding)) {
      this.#d.auditor.emit('browser_mismatch', { clientId: flow.clientId })
      throw new OAuthError('access_denied', 'This sign-in was started in another browser. Start again from the application in this browser.')
    }
    const failed = (error: 'access_denied' | 'temporarily_unavailable' | 'server_error', description: string): OAuthError => {
      this.#d.auditor.emit('callback_processed', { clientId: flow.clientId, outcome: 'error' })
      return redirectableError(flow, config.issuer, error, description)
    }
    if (provider === undefined) throw failed('server_error', 'No identity provider is configured')

    let tokens: UpstreamTokens
    let user: UpstreamUser
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
          throw failed('access_denied', 'The identity provider did not authorize the user')
        case 'not_allowed':
          throw failed('access_denied', err instanceof Error ? err.message : 'The user is not allowed')
        case 'temporary':
          throw failed('temporarily_unavailable', 'The identity provider is unavailable; try again later')
        default:
          throw failed('server_error', 'The identity provider\'s answer could not be accepted')
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
    this.#d.auditor.emit('callback_processed', { clientId: flow.clientId, outcome: 'success' })
    return clientRedirect(flow.redirectUri, { code, state: flow.state, iss: config.issuer })
  }
}
