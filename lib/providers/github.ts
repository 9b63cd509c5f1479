/**
 * GitHub as the upstream identity provider. GitHub speaks plain OAuth 2 (no OpenID Connect, no
 * ID token, no nonce), so the user comes from its REST API: `/user`, `/user/emails` when the
 * profile's e-mail is private, and `/user/orgs` for an organisation allow-list.
 *
 * The user id is GitHub's numeric account id, never the login, which the owner can rename and
 * someone else can then claim.
 *
 * Works with OAuth Apps and GitHub Apps; refresh only works for GitHub Apps with expiring user
 * tokens. GitHub Enterprise Server: set `baseUrl` (https://ghe.example.com) and `apiUrl`
 * (https://ghe.example.com/api/v3).
 */

import { s256 } from '../oauth/pkce.js'
import { checkUpstreamUrl, isTransientStatus, safeCause, safeCode } from './oidc.js'
import { errors, UpstreamError, type UpstreamErrorKind } from '../errors.js'
import {
  keepRenewedTokens,
  type AuthorizationUrlInput,
  type ExchangeInput,
  type Provider,
  type UpstreamTokens,
  type UpstreamUser
} from './types.js'

export interface GithubProviderOptions {
  clientId: string
  clientSecret: string
  /** Organisation logins (case-insensitive); the user must belong to one. Adds the `read:org` scope. */
  allowedOrganizations?: string[]
  /** Default `['read:user', 'user:email']`. */
  scopes?: string[]
  /** Bound for every upstream request, in milliseconds. Default 10000. */
  timeoutMs?: number
  /** Web origin, default https://github.com. */
  baseUrl?: string
  /** REST API root, default https://api.github.com. */
  apiUrl?: string
  /** Extra authorization request parameters, such as `allow_signup: 'false'`. */
  authorizationParams?: Record<string, string>
  /** Provider name. Default 'github'. */
  name?: string
  /** Allow `http:` URLs that are not on loopback. Development only. */
  allowInsecureHttp?: boolean
}

/** The fields of GitHub's `/user` answer that the provider reads. */
interface GithubUser {
  id: number
  login: string
  name?: string | null
  email?: string | null
}

interface GithubEmail {
  email: string
  primary: boolean
  verified: boolean
}

const DEFAULT_SCOPES = ['read:user', 'user:email']
const DEFAULT_TIMEOUT_MS = 10_000
const API_VERSION = '2022-11-28'
const USER_AGENT = 'fastify-mcp-oauth'
/** 100 organisations a page: ten pages is more than any real account. */
const MAX_ORG_PAGES = 10
const RESERVED_PARAMS = new Set(['client_id', 'redirect_uri', 'scope', 'state', 'code_challenge', 'code_challenge_method', 'response_type'])
const ORG_SCOPES = new Set(['read:org', 'write:org', 'admin:org'])

type Stage = 'token' | 'refresh' | 'user' | 'emails' | 'orgs' | 'revocation'

const STAGE_TEXT: Record<Stage, string> = {
  token: 'the authorization code exchange',
  refresh: 'the token refresh',
  user: 'reading the user profile',
  emails: 'reading the e-mail addresses',
  orgs: 'reading the organisation memberships',
  revocation: 'the grant revocation'
}

/** Token endpoint errors (sent with HTTP 200) and what they mean for us. */
const TOKEN_ERRORS: Record<string, UpstreamErrorKind> = {
  bad_verification_code: 'invalid_grant',
  bad_refresh_token: 'invalid_grant',
  invalid_grant: 'invalid_grant',
  access_denied: 'access_denied',
  unverified_user_email: 'not_allowed',
  temporarily_unavailable: 'temporary',
  server_error: 'temporary'
}

function isTimeout (err: unknown): boolean {
  return err instanceof DOMException && err.name === 'TimeoutError'
}

function trimSlash (url: URL): string {
  return url.href.replace(/\/+$/, '')
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** GitHub reports rate limiting as 403 with an exhausted quota, or as 429. */
function isRateLimited (res: Response): boolean {
  return res.status === 429 || (res.status === 403 && (res.headers.get('x-ratelimit-remaining') === '0' || res.headers.has('retry-after')))
}

/** The `rel="next"` target of a Link header, if any. */
function nextLink (header: string | null): string | undefined {
  if (header === null) return undefined
  for (const part of header.split(',')) {
    const match = /<([^>]*)>\s*;(.*)$/.exec(part.trim())
    if (match !== null && /\brel="?next"?/.test(match[2] as string)) return match[1]
  }
  return undefined
}

export function githubProvider (opts: GithubProviderOptions): Provider {
  const name = opts.name ?? 'github'
  if (typeof opts.clientId !== 'string' || opts.clientId === '') throw new errors.PROVIDER_OPTION(name, 'clientId is required')
  if (typeof opts.clientSecret !== 'string' || opts.clientSecret === '') throw new errors.PROVIDER_OPTION(name, 'clientSecret is required')
  const baseUrl = trimSlash(checkUpstreamUrl(opts.baseUrl ?? 'https://github.com', `${name}: baseUrl`, opts.allowInsecureHttp).url)
  const apiRoot = checkUpstreamUrl(opts.apiUrl ?? 'https://api.github.com', `${name}: apiUrl`, opts.allowInsecureHttp).url
  const apiUrl = trimSlash(apiRoot)
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new errors.PROVIDER_OPTION(name, 'timeoutMs must be a positive number')
  const orgs = (opts.allowedOrganizations ?? []).map((org) => org.trim().toLowerCase()).filter((org) => org !== '')
  const scopes = [...(opts.scopes ?? DEFAULT_SCOPES)]
  if (orgs.length > 0 && !scopes.some((scope) => ORG_SCOPES.has(scope))) scopes.push('read:org')
  const extraParams = { ...opts.authorizationParams }
  for (const key of Object.keys(extraParams)) {
    if (RESERVED_PARAMS.has(key)) throw new errors.PROVIDER_OPTION(name, `authorizationParams cannot set "${key}"`)
  }
  const tokenUrl = `${baseUrl}/login/oauth/access_token`

  function fail (kind: UpstreamErrorKind, stage: Stage, detail: string, cause?: unknown): UpstreamError {
    const options = cause === undefined ? undefined : { cause: safeCause(cause) }
    return new UpstreamError(name, kind, `${name}: ${STAGE_TEXT[stage]} failed (${detail})`, options)
  }

  /** fetch with the timeout, mapping network failures and timeouts to 'temporary'. */
  async function send (stage: Stage, url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, { ...init, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) })
    } catch (err) {
      throw fail('temporary', stage, isTimeout(err) ? 'timed out' : 'network error', err)
    }
  }

  /** Reads a JSON body within the same time budget as the request that produced it. */
  async function readJson (stage: Stage, res: Response): Promise<unknown> {
    try {
      return await res.json()
    } catch (err) {
      throw isTimeout(err) ? fail('temporary', stage, 'timed out', err) : fail('invalid_response', stage, 'the answer is not JSON', err)
    }
  }

  function statusError (stage: Stage, res: Response): UpstreamError {
    if (isRateLimited(res)) return fail('temporary', stage, `rate limited, HTTP ${res.status}`)
    if (isTransientStatus(res.status)) return fail('temporary', stage, `HTTP ${res.status}`)
    // The API refusing the user's token: the upstream grant is gone.
    if (res.status === 401 && (stage === 'user' || stage === 'emails' || stage === 'orgs')) return fail('invalid_grant', stage, 'HTTP 401')
    return fail('invalid_response', stage, `HTTP ${res.status}`)
  }

  async function tokenRequest (stage: 'token' | 'refresh', params: URLSearchParams, previous?: UpstreamTokens): Promise<UpstreamTokens> {
    params.set('client_id', opts.clientId)
    params.set('client_secret', opts.clientSecret)
    const res = await send(stage, tokenUrl, {
      method: 'POST',
      headers: { accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded', 'user-agent': USER_AGENT },
      body: params
    })
    if (!res.ok) {
      await res.body?.cancel()
      throw statusError(stage, res)
    }
    const body = await readJson(stage, res)
    if (!isRecord(body)) throw fail('invalid_response', stage, 'the answer is not a JSON object')
    // GitHub reports token endpoint errors with HTTP 200 and an `error` member.
    if (body.error !== undefined) {
      const code = safeCode(body.error)
      throw fail(TOKEN_ERRORS[code] ?? 'invalid_response', stage, `error ${code}`)
    }
    if (typeof body.access_token !== 'string' || body.access_token === '') {
      throw fail('invalid_response', stage, 'no access token in the answer')
    }
    if (typeof body.token_type === 'string' && body.token_type.toLowerCase() !== 'bearer') {
      throw fail('invalid_response', stage, 'unexpected token type')
    }
    const tokens: UpstreamTokens = { accessToken: body.access_token, tokenType: 'bearer' }
    const refreshToken = typeof body.refresh_token === 'string' && body.refresh_token !== '' ? body.refresh_token : previous?.refreshToken
    if (refreshToken !== undefined) tokens.refreshToken = refreshToken
    const expiresIn = Number(body.expires_in)
    if (body.expires_in !== undefined && Number.isFinite(expiresIn) && expiresIn > 0) tokens.expiresAt = Date.now() + expiresIn * 1000
    // GitHub separates granted scopes with commas.
    const scope = typeof body.scope === 'string' ? body.scope.split(/[\s,]+/).filter(Boolean).join(' ') : previous?.scope
    if (scope !== undefined) tokens.scope = scope
    return tokens
  }

  async function api (stage: Stage, url: string, accessToken: string): Promise<Response> {
    return await send(stage, url, {
      headers: {
        accept: 'application/vnd.github+json',
        authorization: `Bearer ${accessToken}`,
        'user-agent': USER_AGENT,
        'x-github-api-version': API_VERSION
      }
    })
  }

  async function readUser (accessToken: string): Promise<GithubUser> {
    const res = await api('user', `${apiUrl}/user`, accessToken)
    if (!res.ok) {
      await res.body?.cancel()
      throw statusError('user', res)
    }
    const body = await readJson('user', res)
    if (!isRecord(body) || !Number.isSafeInteger(body.id) || typeof body.login !== 'string') {
      throw fail('invalid_response', 'user', 'the profile has no numeric id')
    }
    return body as unknown as GithubUser
  }

  /** The primary verified address, else any verified one; undefined without the user:email scope. */
  async function readEmail (accessToken: string): Promise<string | undefined> {
    const res = await api('emails', `${apiUrl}/user/emails?per_page=100`, accessToken)
    if ((res.status === 403 || res.status === 404) && !isRateLimited(res)) {
      // The token lacks the user:email scope: carry on without an address.
      await res.body?.cancel()
      return undefined
    }
    if (!res.ok) {
      await res.body?.cancel()
      throw statusError('emails', res)
    }
    const body = await readJson('emails', res)
    if (!Array.isArray(body)) throw fail('invalid_response', 'emails', 'the answer is not a list')
    const emails = body.filter((entry): entry is GithubEmail =>
      isRecord(entry) && typeof entry.email === 'string' && entry.verified === true)
    return (emails.find((entry) => entry.primary) ?? emails[0])?.email
  }

  async function isMember (accessToken: string): Promise<boolean> {
    let url: string | undefined = `${apiUrl}/user/orgs?per_page=100`
    for (let page = 0; url !== undefined && page < MAX_ORG_PAGES; page++) {
      const res: Response = await api('orgs', url, accessToken)
      if (!res.ok) {
        await res.body?.cancel()
        throw statusError('orgs', res)
      }
      const body = await readJson('orgs', res)
      if (!Array.isArray(body)) throw fail('invalid_response', 'orgs', 'the answer is not a list')
      for (const org of body) {
        if (isRecord(org) && typeof org.login === 'string' && orgs.includes(org.login.toLowerCase())) return true
      }
      url = nextLink(res.headers.get('link'))
      // Never send the token anywhere but the configured API.
      if (url !== undefined && new URL(url, apiRoot).origin !== apiRoot.origin) url = undefined
    }
    return false
  }

  async function refreshTokens (tokens: UpstreamTokens): Promise<UpstreamTokens> {
    if (tokens.refreshToken === undefined || tokens.refreshToken === '') {
      // OAuth Apps (and GitHub Apps without expiring tokens) issue none.
      throw new UpstreamError(name, 'invalid_grant', `${name}: there is no refresh token to use`)
    }
    return await tokenRequest('refresh', new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: tokens.refreshToken
    }), tokens)
  }

  /** The user behind a token, under the login policy (organisation membership). */
  async function userFor (accessToken: string): Promise<UpstreamUser> {
    const profile = await readUser(accessToken)
    const user: UpstreamUser = { id: String(profile.id) }
    if (typeof profile.name === 'string' && profile.name !== '') user.name = profile.name
    else user.name = profile.login
    if (typeof profile.email === 'string' && profile.email !== '') {
      // GitHub only lets a verified address be the public profile e-mail.
      user.email = profile.email
      user.emailVerified = true
    } else {
      const email = await readEmail(accessToken)
      if (email !== undefined) {
        user.email = email
        user.emailVerified = true
      }
    }
    if (orgs.length > 0 && !(await isMember(accessToken))) {
      throw new UpstreamError(name, 'not_allowed', `${name}: the user is not a member of an allowed organisation`)
    }
    return user
  }

  return {
    name,

    async authorizationUrl (input: AuthorizationUrlInput): Promise<URL> {
      const url = new URL(`${baseUrl}/login/oauth/authorize`)
      for (const [key, value] of Object.entries(extraParams)) url.searchParams.set(key, value)
      url.searchParams.set('client_id', opts.clientId)
      url.searchParams.set('redirect_uri', input.redirectUri)
      url.searchParams.set('scope', scopes.join(' '))
      url.searchParams.set('state', input.state)
      url.searchParams.set('code_challenge', s256(input.codeVerifier))
      url.searchParams.set('code_challenge_method', 'S256')
      return url
    },

    async exchangeCode (input: ExchangeInput): Promise<{ tokens: UpstreamTokens, user: UpstreamUser }> {
      const params = input.callbackUrl.searchParams
      const error = params.get('error')
      if (error !== null) {
        throw new UpstreamError(name, 'access_denied', `${name}: the authorization was refused (error ${safeCode(error)})`)
      }
      if (params.get('state') !== input.state) {
        throw new UpstreamError(name, 'invalid_response', `${name}: the callback state does not match`)
      }
      const code = params.get('code')
      if (code === null || code === '') {
        throw new UpstreamError(name, 'invalid_response', `${name}: the callback carries no code`)
      }
      const tokens = await tokenRequest('token', new URLSearchParams({
        code,
        redirect_uri: input.redirectUri,
        code_verifier: input.codeVerifier
      }))
      const user = await userFor(tokens.accessToken)
      return { tokens, user }
    },

    async refresh (tokens: UpstreamTokens): Promise<UpstreamTokens> {
      return await refreshTokens(tokens)
    },

    async recheck (tokens: UpstreamTokens): Promise<{ tokens: UpstreamTokens, user: UpstreamUser }> {
      // OAuth App tokens have no refresh token and do not expire: the stored one asks (a revoked
      // authorization answers 401, which is invalid_grant).
      if (tokens.refreshToken === undefined || tokens.refreshToken === '') return { tokens, user: await userFor(tokens.accessToken) }
      const next = await refreshTokens(tokens)
      try {
        return { tokens: next, user: await userFor(next.accessToken) }
      } catch (err) {
        // GitHub rotates refresh tokens: the one we held is spent, the new ones must be kept.
        throw keepRenewedTokens(err, next)
      }
    },

    async revoke (tokens: UpstreamTokens): Promise<void> {
      const basic = Buffer.from(`${opts.clientId}:${opts.clientSecret}`).toString('base64')
      const res = await send('revocation', `${apiUrl}/applications/${encodeURIComponent(opts.clientId)}/grant`, {
        method: 'DELETE',
        headers: {
          accept: 'application/vnd.github+json',
          authorization: `Basic ${basic}`,
          'content-type': 'application/json',
          'user-agent': USER_AGENT,
          'x-github-api-version': API_VERSION
        },
        body: JSON.stringify({ access_token: tokens.accessToken })
      })
      await res.body?.cancel()
      // 404 and 422: the token or the grant is already gone, which is what we wanted.
      if (res.ok || res.status === 404 || res.status === 422) return
      throw statusError('revocation', res)
    }
  }
}
