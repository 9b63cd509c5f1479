/**
 * Generic OpenID Connect provider: any issuer that publishes discovery metadata
 * (`/.well-known/openid-configuration`). Built on openid-client, which does the protocol work:
 * discovery, PKCE, the code exchange with state, issuer (RFC 9207) and nonce checks, ID token
 * validation, refresh and RFC 7009 revocation. ID token signatures are verified against the
 * issuer's JWKS as well (openid-client's "non-repudiation" checks), so a token endpoint reached
 * over plain HTTP in development cannot slip an unsigned or forged ID token through.
 *
 * Every upstream request (discovery, token, refresh, revocation, userinfo, JWKS) carries a
 * timeout. An `error` parameter on the callback URL is reported before any protocol check. Every failure becomes an `UpstreamError` whose message holds no token, code, secret
 * or upstream response body.
 */

import * as client from 'openid-client'
import { decodeJwt } from 'jose'
import { errors, UpstreamError, type UpstreamErrorKind } from '../errors.js'
import {
  keepRenewedTokens,
  type AuthorizationUrlInput,
  type ExchangeInput,
  type Provider,
  type UpstreamTokens,
  type UpstreamUser
} from './types.js'

/** Claims of a verified ID token, merged with UserInfo claims when those were fetched. */
export interface OidcClaims {
  sub: string
  [claim: string]: unknown
}

/**
 * Maps verified claims to the user. `user` is the default mapping (id = sub, email,
 * email_verified, name). Throw an `UpstreamError` with kind 'not_allowed' to refuse the user;
 * any other error is reported as 'invalid_response'.
 */
export type MapUser = (claims: OidcClaims, user: UpstreamUser) => UpstreamUser | Promise<UpstreamUser>

export interface OidcProviderOptions {
  /** Issuer identifier, for example `https://login.example.com/realms/main`. */
  issuer: string | URL
  clientId: string
  /** Absent for a public client (PKCE only, token endpoint auth method `none`). */
  clientSecret?: string
  /**
   * Default `['openid', 'email', 'profile']`; `openid` is added when missing, and
   * `offline_access` when the issuer lists it (see `offlineAccess`).
   */
  scopes?: string[]
  /**
   * Ask for a refresh token with the `offline_access` scope when the issuer's discovery lists it.
   * Without an upstream refresh token the user can only be re-checked while the login's access
   * token lasts. Issuers that follow OpenID Connect Core 11 to the letter (node oidc-provider)
   * grant it only with `prompt=consent`: set that in `authorizationParams` for them (it is not
   * the default: it shows the consent screen at every login, and some tenants let only an
   * administrator consent). Default true.
   */
  offlineAccess?: boolean
  /** Extra authorization request parameters (`prompt`, `login_hint`, ...). Protocol parameters are refused. */
  authorizationParams?: Record<string, string>
  /** Bound for every upstream request, in milliseconds. Default 10000. */
  timeoutMs?: number
  /** Provider name for logs, metrics and grant records. Default 'oidc'. */
  name?: string
  /** Allow an `http:` issuer that is not on loopback. Development only. */
  allowInsecureHttp?: boolean
  /** Fetch implementation handed to openid-client (tests, proxies, mTLS). */
  customFetch?: client.CustomFetch
  /** Custom user mapping; see {@link MapUser}. */
  mapUser?: MapUser
  /**
   * When to call the UserInfo endpoint: 'auto' (default) only when the ID token carries no
   * `email` claim, 'always', or 'never'. UserInfo claims never override ID token claims.
   */
  userInfo?: 'auto' | 'always' | 'never'
  /**
   * Client authentication at the token endpoint for a confidential client. Default: basic when
   * the issuer supports it (or says nothing), post otherwise.
   */
  clientAuthMethod?: 'client_secret_basic' | 'client_secret_post'
}

const DEFAULT_SCOPES = ['openid', 'email', 'profile']
const DEFAULT_TIMEOUT_MS = 10_000

/** Parameters the provider owns; `authorizationParams` cannot set them. */
const RESERVED_PARAMS = new Set([
  'client_id', 'redirect_uri', 'response_type', 'response_mode', 'scope', 'state', 'nonce',
  'code_challenge', 'code_challenge_method', 'request', 'request_uri'
])

/** Authorization and token endpoint error codes that mean the user or the provider refused. */
const REFUSALS = new Set([
  'access_denied', 'login_required', 'consent_required', 'interaction_required', 'account_selection_required'
])

/** Error codes that mean "try again later". */
const TRANSIENT = new Set(['temporarily_unavailable', 'server_error', 'slow_down'])

/** True for the loopback names an insecure `http:` URL is allowed on. */
export function isLoopbackHost (hostname: string): boolean {
  return hostname === '127.0.0.1' || hostname === '[::1]' || hostname === '::1' || hostname === 'localhost'
}

/**
 * Parses an upstream base URL and refuses `http:` unless it points at loopback or the caller
 * opted in. Returns the URL and whether plain HTTP is in use.
 */
export function checkUpstreamUrl (value: string | URL, label: string, allowInsecureHttp = false): { url: URL, insecure: boolean } {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new errors.PROVIDER_URL(label)
  }
  if (url.protocol === 'https:') return { url, insecure: false }
  if (url.protocol === 'http:' && (allowInsecureHttp || isLoopbackHost(url.hostname))) {
    return { url, insecure: true }
  }
  throw new errors.PROVIDER_INSECURE_URL(label)
}

/** A short upstream error code, or a placeholder when it is not a plain identifier. */
export function safeCode (value: unknown): string {
  return typeof value === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(value) ? value : 'unrecognised'
}

/** HTTP status codes worth a retry: 429 and every 5xx. */
export function isTransientStatus (status: number): boolean {
  return status === 429 || status >= 500
}

/**
 * A stand-in `cause` that keeps the class and code of the original error but none of its
 * payload (response bodies, callback parameters and claims all hang off openid-client errors).
 */
export function safeCause (err: unknown): Error {
  if (!(err instanceof Error)) return new errors.UPSTREAM_CAUSE('non-error thrown')
  const code = (err as { code?: unknown }).code
  const inner = (err.cause as { code?: unknown } | undefined)?.code
  const parts = [err.name]
  if (typeof code === 'string') parts.push(safeCode(code))
  if (typeof inner === 'string') parts.push(safeCode(inner))
  return new errors.UPSTREAM_CAUSE(parts.join(' '))
}

type Stage = 'discovery' | 'token' | 'refresh' | 'revocation' | 'userinfo'

const STAGE_TEXT: Record<Stage, string> = {
  discovery: 'discovery of the issuer metadata',
  token: 'the authorization code exchange',
  refresh: 'the token refresh',
  revocation: 'the token revocation',
  userinfo: 'the UserInfo request'
}

function fromOAuthCode (code: string): UpstreamErrorKind {
  if (code === 'invalid_grant') return 'invalid_grant'
  if (REFUSALS.has(code)) return 'access_denied'
  if (TRANSIENT.has(code)) return 'temporary'
  return 'invalid_response'
}

function classify (err: unknown): { kind: UpstreamErrorKind, detail: string } {
  if (err instanceof client.ResponseBodyError) {
    const kind = isTransientStatus(err.status) ? 'temporary' : fromOAuthCode(err.error)
    return { kind, detail: `error ${safeCode(err.error)}, HTTP ${err.status}` }
  }
  if (err instanceof client.WWWAuthenticateChallengeError) {
    return { kind: isTransientStatus(err.status) ? 'temporary' : 'invalid_response', detail: `HTTP ${err.status} challenge` }
  }
  if (err instanceof client.ClientError) {
    const code = safeCode(err.code)
    if (code === 'OAUTH_TIMEOUT' || code === 'OAUTH_ABORT') return { kind: 'temporary', detail: 'timed out' }
    if (err.cause instanceof Response) {
      const status = err.cause.status
      return { kind: isTransientStatus(status) ? 'temporary' : 'invalid_response', detail: `unexpected HTTP ${status}` }
    }
    return { kind: 'invalid_response', detail: code }
  }
  if (err instanceof TypeError) {
    // openid-client rethrows fetch's network failures ("fetch failed") as they are; its own
    // argument checks are TypeErrors too, but carry an ERR_INVALID_ARG_* code.
    const code = (err as { code?: unknown }).code
    if (typeof code === 'string' && code.startsWith('ERR_INVALID_ARG')) {
      return { kind: 'invalid_response', detail: 'invalid argument' }
    }
    return { kind: 'temporary', detail: 'network error' }
  }
  /* c8 ignore start */
  // openid-client wraps every other failure (timeouts included) in a ClientError; this is a
  // safety net for anything thrown around it.
  return { kind: 'invalid_response', detail: 'unexpected failure' }
}
/* c8 ignore stop */

function toUpstreamError (provider: string, stage: Stage, err: unknown): UpstreamError {
  const { kind, detail } = classify(err)
  return new UpstreamError(provider, kind, `${provider}: ${STAGE_TEXT[stage]} failed (${detail})`, { cause: safeCause(err) })
}

function toTokens (res: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers, previous?: UpstreamTokens): UpstreamTokens {
  const tokens: UpstreamTokens = { accessToken: res.access_token, tokenType: res.token_type }
  const refreshToken = res.refresh_token ?? previous?.refreshToken
  if (refreshToken !== undefined) tokens.refreshToken = refreshToken
  const idToken = res.id_token ?? previous?.idToken
  if (idToken !== undefined) tokens.idToken = idToken
  const expiresIn = res.expiresIn()
  if (expiresIn !== undefined) tokens.expiresAt = Date.now() + expiresIn * 1000
  const scope = res.scope ?? previous?.scope
  if (scope !== undefined) tokens.scope = scope
  return tokens
}

/**
 * The claims of an ID token we stored after verifying it at login or refresh; undefined when
 * there is none. Not verified again: it comes from our own store, sealed with the grant.
 */
function idTokenClaims (idToken: string | undefined): OidcClaims | undefined {
  if (idToken === undefined) return undefined
  try {
    const claims = decodeJwt(idToken)
    return typeof claims.sub === 'string' ? claims as OidcClaims : undefined
  } catch {
    return undefined
  }
}

/** The default claims-to-user mapping: id = sub, email, email_verified, name. */
export function defaultUserFromClaims (claims: OidcClaims): UpstreamUser {
  const user: UpstreamUser = { id: claims.sub }
  if (typeof claims.email === 'string' && claims.email !== '') user.email = claims.email
  const verified = claims.email_verified
  // A few providers send the boolean as a string.
  if (typeof verified === 'boolean') user.emailVerified = verified
  else if (verified === 'true' || verified === 'false') user.emailVerified = verified === 'true'
  if (typeof claims.name === 'string' && claims.name !== '') {
    user.name = claims.name
  } else if (typeof claims.preferred_username === 'string' && claims.preferred_username !== '') {
    user.name = claims.preferred_username
  }
  return user
}

/** Runs the mapping hook and checks what it returned. */
export async function mapClaims (provider: string, claims: OidcClaims, mapUser: MapUser | undefined): Promise<UpstreamUser> {
  const base = defaultUserFromClaims(claims)
  if (mapUser === undefined) return base
  let user: UpstreamUser
  try {
    user = await mapUser(claims, base)
  } catch (err) {
    if (err instanceof UpstreamError) throw err
    throw new UpstreamError(provider, 'invalid_response', `${provider}: the user mapping failed`, { cause: safeCause(err) })
  }
  if (typeof user?.id !== 'string' || user.id === '') {
    throw new UpstreamError(provider, 'invalid_response', `${provider}: the user mapping returned no user id`)
  }
  return user
}

/** A Provider for any OpenID Connect issuer, configured through discovery on first use. */
export function oidcProvider (opts: OidcProviderOptions): Provider {
  const name = opts.name ?? 'oidc'
  if (typeof opts.clientId !== 'string' || opts.clientId === '') throw new errors.PROVIDER_OPTION(name, 'clientId is required')
  const { url: issuer, insecure } = checkUpstreamUrl(opts.issuer, `${name}: issuer`, opts.allowInsecureHttp)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new errors.PROVIDER_OPTION(name, 'timeoutMs must be a positive number')
  const scopes = [...new Set(['openid', ...(opts.scopes ?? DEFAULT_SCOPES)])]
  const extraParams = { ...opts.authorizationParams }
  for (const key of Object.keys(extraParams)) {
    if (RESERVED_PARAMS.has(key)) throw new errors.PROVIDER_OPTION(name, `authorizationParams cannot set "${key}"`)
  }
  const userInfoMode = opts.userInfo ?? 'auto'
  const secret = opts.clientSecret

  const clientAuth: client.ClientAuth = (as, metadata, body, headers) => {
    if (secret === undefined || secret === '') return client.None()(as, metadata, body, headers)
    let method = opts.clientAuthMethod
    if (method === undefined) {
      const supported = as.token_endpoint_auth_methods_supported
      method = supported === undefined || supported.includes('client_secret_basic') ? 'client_secret_basic' : 'client_secret_post'
    }
    const auth = method === 'client_secret_basic' ? client.ClientSecretBasic(secret) : client.ClientSecretPost(secret)
    return auth(as, metadata, body, headers)
  }

  let pending: Promise<client.Configuration> | undefined
  function configuration (): Promise<client.Configuration> {
    if (pending === undefined) {
      const execute: Array<(config: client.Configuration) => void> = [client.enableNonRepudiationChecks]
      // Plain HTTP was refused above unless the issuer is on loopback or the caller opted in.
      if (insecure) execute.push(client.allowInsecureRequests)
      const options: client.DiscoveryRequestOptions = { timeout: timeoutMs / 1000, execute }
      if (opts.customFetch !== undefined) options[client.customFetch] = opts.customFetch
      const attempt = client.discovery(issuer, opts.clientId, undefined, clientAuth, options)
        .catch((err: unknown) => {
          pending = undefined // a failed discovery is retried on next use
          throw toUpstreamError(name, 'discovery', err)
        })
      pending = attempt
    }
    return pending
  }

  async function claimsFor (config: client.Configuration, res: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers): Promise<OidcClaims> {
    const idClaims = res.claims()
    /* c8 ignore start */
    // openid-client already refuses a response without an ID token when a nonce is expected.
    if (idClaims === undefined) {
      throw new UpstreamError(name, 'invalid_response', `${name}: the token response carried no ID token`)
    }
    /* c8 ignore stop */
    const claims: OidcClaims = { ...idClaims }
    const wantUserInfo = userInfoMode === 'always' || (userInfoMode === 'auto' && claims.email === undefined)
    if (wantUserInfo && config.serverMetadata().userinfo_endpoint !== undefined) {
      let info: client.UserInfoResponse
      try {
        // The subject check ties the UserInfo answer to the verified ID token.
        info = await client.fetchUserInfo(config, res.access_token, claims.sub)
      } catch (err) {
        throw toUpstreamError(name, 'userinfo', err)
      }
      for (const [key, value] of Object.entries(info)) {
        if (claims[key] === undefined) claims[key] = value
      }
    }
    return claims
  }

  /** The refresh token grant; a refreshed ID token must name the same subject (OpenID Connect Core 12.2). */
  async function refreshGrant (tokens: UpstreamTokens): Promise<client.TokenEndpointResponse & client.TokenEndpointResponseHelpers> {
    if (tokens.refreshToken === undefined || tokens.refreshToken === '') {
      throw new UpstreamError(name, 'invalid_grant', `${name}: there is no refresh token to use`)
    }
    const config = await configuration()
    let res: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers
    try {
      res = await client.refreshTokenGrant(config, tokens.refreshToken)
    } catch (err) {
      throw toUpstreamError(name, 'refresh', err)
    }
    const fresh = res.claims()
    if (fresh !== undefined) {
      const previousSub = idTokenClaims(tokens.idToken)?.sub
      if (previousSub !== undefined && previousSub !== fresh.sub) {
        // Not a broken answer: the provider vouches for another user now, which ends our grant.
        throw keepRenewedTokens(new UpstreamError(name, 'identity_changed', `${name}: the refreshed ID token names another subject`), toTokens(res, tokens))
      }
    }
    return res
  }

  /** UserInfo for a re-check: a refused access token (401) means the upstream grant is gone. */
  async function userInfo (config: client.Configuration, accessToken: string, sub: string | undefined): Promise<client.UserInfoResponse> {
    try {
      return await client.fetchUserInfo(config, accessToken, sub ?? client.skipSubjectCheck)
    } catch (err) {
      if (err instanceof client.WWWAuthenticateChallengeError && err.status === 401) {
        throw new UpstreamError(name, 'invalid_grant', `${name}: the UserInfo endpoint refused the access token (HTTP 401)`, { cause: safeCause(err) })
      }
      throw toUpstreamError(name, 'userinfo', err)
    }
  }

  /** The user after an upstream refresh: the fresh ID token's claims, UserInfo as at login, then the login policy. */
  async function checkRefreshed (config: client.Configuration, res: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers, next: UpstreamTokens, previous: OidcClaims | undefined): Promise<UpstreamUser> {
    const fresh = res.claims()
    let claims: OidcClaims | undefined = fresh === undefined ? undefined : { ...fresh }
    // As at login: UserInfo when the ID token lacks the e-mail (or always). Without a fresh ID
    // token, UserInfo is the only fresh source, and its answer wins over the login's claims.
    const wantUserInfo = userInfoMode === 'always' || (userInfoMode === 'auto' && claims?.email === undefined)
    if (wantUserInfo && config.serverMetadata().userinfo_endpoint !== undefined) {
      const info = await userInfo(config, next.accessToken, claims?.sub ?? previous?.sub)
      claims = claims === undefined ? { ...previous, ...info } : { ...info, ...claims }
    }
    // Nothing fresher: the login's claims (the upstream refresh itself was the check).
    claims ??= previous
    if (claims === undefined) throw new UpstreamError(name, 'invalid_response', `${name}: there are no claims to check the user against`)
    return await mapClaims(name, claims, opts.mapUser)
  }

  return {
    name,
    // As configured: the `iss` an ID-JAG of this IdP carries is the issuer of its ID tokens.
    issuer: typeof opts.issuer === 'string' ? opts.issuer : opts.issuer.href,

    async authorizationUrl (input: AuthorizationUrlInput): Promise<URL> {
      const config = await configuration()
      const params = new URLSearchParams(extraParams)
      params.set('response_type', 'code')
      params.set('redirect_uri', input.redirectUri)
      const offline = opts.offlineAccess !== false && !scopes.includes('offline_access') &&
        config.serverMetadata().scopes_supported?.includes('offline_access') === true
      params.set('scope', (offline ? [...scopes, 'offline_access'] : scopes).join(' '))
      params.set('state', input.state)
      params.set('nonce', input.nonce)
      params.set('code_challenge', await client.calculatePKCECodeChallenge(input.codeVerifier))
      params.set('code_challenge_method', 'S256')
      return client.buildAuthorizationUrl(config, params)
    },

    async exchangeCode (input: ExchangeInput): Promise<{ tokens: UpstreamTokens, user: UpstreamUser }> {
      const error = input.callbackUrl.searchParams.get('error')
      if (error !== null) {
        const code = safeCode(error)
        const kind = code === 'temporarily_unavailable' ? 'temporary' : 'access_denied'
        throw new UpstreamError(name, kind, `${name}: the authorization was refused (error ${code})`)
      }
      const config = await configuration()
      // openid-client derives the token request's redirect_uri from the URL it is given, so
      // hand it our registered redirect URI with the callback's parameters rather than the
      // URL as a proxy in front of us may have rewritten it.
      const current = new URL(input.redirectUri)
      current.search = input.callbackUrl.search
      current.hash = ''
      let res: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers
      try {
        res = await client.authorizationCodeGrant(config, current, {
          pkceCodeVerifier: input.codeVerifier,
          expectedState: input.state,
          expectedNonce: input.nonce,
          idTokenExpected: true
        })
      } catch (err) {
        throw toUpstreamError(name, 'token', err)
      }
      const claims = await claimsFor(config, res)
      const user = await mapClaims(name, claims, opts.mapUser)
      return { tokens: toTokens(res), user }
    },

    async refresh (tokens: UpstreamTokens): Promise<UpstreamTokens> {
      return toTokens(await refreshGrant(tokens), tokens)
    },

    async recheck (tokens: UpstreamTokens): Promise<{ tokens: UpstreamTokens, user: UpstreamUser }> {
      const config = await configuration()
      const previous = idTokenClaims(tokens.idToken)
      if (tokens.refreshToken !== undefined && tokens.refreshToken !== '') {
        const res = await refreshGrant(tokens)
        const next = toTokens(res, tokens)
        try {
          return { tokens: next, user: await checkRefreshed(config, res, next, previous) }
        } catch (err) {
          // The refresh token we held is spent: whatever failed after it, the new tokens must be kept.
          throw keepRenewedTokens(err, next)
        }
      }
      // No refresh token: UserInfo with the stored access token is the only way to ask (the plugin
      // does not ask once that token has expired).
      if (config.serverMetadata().userinfo_endpoint === undefined) {
        throw new UpstreamError(name, 'invalid_grant', `${name}: no refresh token and no UserInfo endpoint to re-check the user with`)
      }
      const info = await userInfo(config, tokens.accessToken, previous?.sub)
      return { tokens, user: await mapClaims(name, { ...previous, ...info }, opts.mapUser) }
    },

    async revoke (tokens: UpstreamTokens): Promise<void> {
      const config = await configuration()
      if (config.serverMetadata().revocation_endpoint === undefined) return
      const targets: Array<[string, string]> = []
      // The refresh token first: revoking it usually takes the grant's access tokens along.
      if (tokens.refreshToken !== undefined && tokens.refreshToken !== '') targets.push([tokens.refreshToken, 'refresh_token'])
      if (tokens.accessToken !== '') targets.push([tokens.accessToken, 'access_token'])
      for (const [token, hint] of targets) {
        try {
          await client.tokenRevocation(config, token, { token_type_hint: hint })
        } catch (err) {
          // RFC 7009 2.2.1: a server that cannot revoke this token type says so; nothing to do.
          if (err instanceof client.ResponseBodyError && err.error === 'unsupported_token_type') continue
          throw toUpstreamError(name, 'revocation', err)
        }
      }
    }
  }
}
