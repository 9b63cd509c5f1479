/**
 * A development identity provider: oidc-provider (a certified OpenID Provider) on loopback, with
 * its built-in development login form, which accepts ANY login name and any password. It exists
 * so the plugin can be tried and tested end to end without a Google or GitHub account. Never
 * expose it beyond loopback; `startDevIdp` refuses other hosts.
 *
 *   const idp = await startDevIdp({ clients: [{ client_id: 'mcp', client_secret: 's3cret', redirect_uris: ['http://127.0.0.1:3000/oauth/callback'] }] })
 *   oidcProvider({ issuer: idp.issuer, clientId: 'mcp', clientSecret: 's3cret' })
 *   ...
 *   await idp.close()
 *
 * Accounts: the login name is the subject; e-mail `${login}@dev.local` (or the login itself
 * when it contains '@'), always verified; name = login. A login such as `ann@corp.example`
 * also gets a Google-style `hd` claim (`corp.example`). `claims` in the options adds to or
 * overrides these per login.
 *
 * Tokens: code flow with PKCE S256 required, refresh tokens for every client allowed the
 * refresh_token grant (no offline_access scope needed), rotated on each use; RFC 7009
 * revocation; ID tokens signed with a fresh in-memory ES256 key.
 *
 * Enterprise IdP: a client given `crossAppAccess` may turn the ID tokens its users got here into
 * ID-JAGs (Identity Assertion JWT Authorization Grants, draft-ietf-oauth-identity-assertion-authz-grant,
 * as MCP's Enterprise-Managed Authorization profiles it) with an RFC 8693 token exchange at the token
 * endpoint, for the authorization servers it names. That is the first half of Cross App Access:
 *
 *   const idp = await startDevIdp({ clients: [{
 *     client_id: 'wiki', client_secret: 'wiki-secret', redirect_uris: ['http://127.0.0.1:4000/callback'],
 *     crossAppAccess: { 'http://127.0.0.1:3000': { client_id: 'wiki-at-mcp', scopes: ['mcp:tools'] } }
 *   }] })
 *   // wiki logs ann in at the IdP (code flow) and keeps her ID token, then:
 *   const { jwtAuthGrant } = await discoverAndRequestJwtAuthGrant({ idpUrl: idp.issuer,
 *     audience: 'http://127.0.0.1:3000', resource: 'http://127.0.0.1:3000/mcp', idToken,
 *     clientId: 'wiki', clientSecret: 'wiki-secret', scope: 'mcp:tools' })
 *   // and presents it to http://127.0.0.1:3000 with the jwt-bearer grant, as client wiki-at-mcp.
 *
 * The ID-JAG (header typ `oauth-id-jag+jwt`, signed with the key of the IdP's JWKS) carries the
 * same `sub` as the user's interactive logins here, `aud` = the authorization server's issuer,
 * `client_id` = the client's id THERE, `resource`, the granted `scope`, a fresh `jti`, a short
 * lifetime, the login's `auth_time`, and the account's e-mail and name.
 */

import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { randomBytes, randomUUID } from 'node:crypto'
import { errors as jose, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose'

/** What a client may ask ID-JAGs for at one resource authorization server. */
export interface DevIdpCrossAppAccess {
  /** The client's id at that authorization server: the ID-JAG's `client_id`. Default: its id at the IdP. */
  client_id?: string
  /**
   * The IdP's policy: the scopes this client may have there. Requested scopes outside the list are
   * dropped (none left: invalid_scope); a request without scope gets them all. Absent: requested
   * scopes pass as they are.
   */
  scopes?: string[]
}

export interface DevIdpClient {
  client_id: string
  /** Absent: a public client (token endpoint auth method `none`). */
  client_secret?: string
  redirect_uris: string[]
  /**
   * Enterprise-Managed Authorization: the resource authorization servers (by exact issuer) this
   * client may get ID-JAGs for. Confidential clients only. It authenticates at the token exchange
   * with client_secret_basic or client_secret_post.
   */
  crossAppAccess?: Record<string, DevIdpCrossAppAccess>
}

export interface DevIdpOptions {
  /** Loopback host to listen on: '127.0.0.1' (default), '::1' or 'localhost'. */
  host?: string
  /** 0 (default) picks a free port. */
  port?: number
  clients: DevIdpClient[]
  /** Receives oidc-provider's start-up notices and server errors; silent by default. */
  log?: (msg: string) => void
  /** Put scope claims (email, name, ...) in the ID token, as Google does. Default true. */
  claimsInIdToken?: boolean
  /** Rotate refresh tokens on every use. Default true. */
  rotateRefreshTokens?: boolean
  /** Access token lifetime in seconds. Default 3600. */
  accessTokenTtl?: number
  /** ID token lifetime in seconds. Default 3600. */
  idTokenTtl?: number
  /** ID-JAG lifetime in seconds. Default 300. */
  idJagTtl?: number
  /** Extra or overriding claims for a login name. */
  claims?: (login: string) => Record<string, unknown>
  /**
   * Logins treated as disabled or deleted accounts, read at every use (a test may add to the set
   * later): no account is found, so logging in, the refresh_token grant (invalid_grant) and
   * UserInfo (invalid_token) fail for them.
   */
  disabledAccounts?: ReadonlySet<string>
}

export interface DevIdp {
  /** Issuer identifier, e.g. `http://127.0.0.1:54321`. */
  issuer: string
  /** Stops the server and drops every open connection. */
  close(): Promise<void>
  /** How many token requests with grant_type=refresh_token arrived (successful or not). */
  refreshCount(): number
  /**
   * An outage of the token endpoint, until called again with 'none': a status (429, 503, ...)
   * answered with a temporarily_unavailable error, or 'hang' (never answered until close()).
   */
  tokenOutage(mode: 'none' | 'hang' | number): void
}

/* Just enough of oidc-provider's shape for this file (the package ships no type declarations). */
interface OidcContext {
  oidc?: { params?: Record<string, unknown> }
}
/** The context a grant handler gets: parameters already limited to the grant's, the client authenticated. */
interface GrantContext {
  oidc: { params: Record<string, string | undefined>, client: { clientId: string } }
  body: unknown
}
interface OidcProviderInstance {
  Client: { find(id: string): Promise<unknown> }
  on(event: string, listener: (ctx: OidcContext, err?: Error) => void): void
  callback(): (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void
  registerGrantType(name: string, handler: (ctx: GrantContext) => Promise<void>, params: string[]): void
}
interface OidcProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => OidcProviderInstance
  /** Its OAuth error with a code and a description of our choosing, answered with status 400. */
  errors: { CustomOIDCProviderError: new (error: string, description: string) => Error }
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag'
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token'

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost'])
const NOTICE = /^oidc-provider (NOTICE|WARNING): /
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g

/**
 * Sends oidc-provider's console notices (it prints them with console.info/warn) to `log`;
 * anything else written to the console passes through untouched. Returns the undo function.
 */
function divertNotices (log: (msg: string) => void): () => void {
  const { info, warn } = console
  const divert = (original: (...args: unknown[]) => void) => (...args: unknown[]): void => {
    const first = String(args[0]).replace(ANSI, '')
    if (NOTICE.test(first)) log(first)
    else original.apply(console, args)
  }
  const divertedInfo = divert(info)
  const divertedWarn = divert(warn)
  console.info = divertedInfo
  console.warn = divertedWarn
  return () => {
    // Leave the console alone if someone else has replaced these meanwhile.
    if (console.info === divertedInfo) console.info = info
    if (console.warn === divertedWarn) console.warn = warn
  }
}

let loading: Promise<OidcProviderModule> | undefined

/** Loads oidc-provider once; on Node 20 its import prints an "unsupported runtime" notice. */
function loadProvider (log: (msg: string) => void): Promise<OidcProviderModule> {
  if (loading === undefined) {
    // A non-literal specifier: the package ships no type declarations, so it is typed by hand above.
    const specifier: string = 'oidc-provider'
    const restore = divertNotices(log)
    loading = (import(specifier) as Promise<OidcProviderModule>).finally(restore)
  }
  return loading
}

function issuerFor (host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`
}

/** One client's cross-app access, checked: audience issuer -> the ID-JAG's client_id and the allowed scopes. */
type AudiencePolicy = Map<string, { clientId: string, scopes?: ReadonlySet<string> }>

/** An absolute http(s) URL without fragment: what an issuer and an RFC 8707 resource look like. */
function isAbsoluteUrl (value: string): boolean {
  if (!URL.canParse(value) || value.includes('#')) return false
  const { protocol } = new URL(value)
  return protocol === 'https:' || protocol === 'http:'
}

/** Checks every client's `crossAppAccess` at start-up, so a typo fails there and not at the first exchange. */
function crossAppAccessPolicies (clients: DevIdpClient[]): Map<string, AudiencePolicy> {
  const policies = new Map<string, AudiencePolicy>()
  for (const c of clients) {
    if (c.crossAppAccess === undefined) continue
    const where = `startDevIdp: client ${c.client_id}: crossAppAccess`
    if (c.client_secret === undefined) throw new TypeError(`${where} needs a confidential client (a client_secret)`)
    const policy: AudiencePolicy = new Map()
    for (const [audience, access] of Object.entries(c.crossAppAccess)) {
      if (!isAbsoluteUrl(audience) || new URL(audience).search !== '') throw new TypeError(`${where}: ${audience} is not an issuer URL`)
      const clientId = access.client_id ?? c.client_id
      if (typeof clientId !== 'string' || clientId === '') throw new TypeError(`${where}[${audience}].client_id must be a non-empty string`)
      if (access.scopes !== undefined && (!Array.isArray(access.scopes) || !access.scopes.every((s) => typeof s === 'string' && /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(s)))) {
        throw new TypeError(`${where}[${audience}].scopes must be a list of scope tokens`)
      }
      policy.set(audience, { clientId, ...(access.scopes === undefined ? {} : { scopes: new Set(access.scopes) }) })
    }
    policies.set(c.client_id, policy)
  }
  return policies
}

function pick (from: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => from[k] !== undefined).map((k) => [k, from[k]]))
}

/** Why a subject token was refused, said without repeating any of it. */
function subjectTokenProblem (err: unknown): string {
  if (err instanceof jose.JWTExpired) return 'the subject token has expired'
  if (err instanceof jose.JWTClaimValidationFailed && err.claim === 'aud') return 'the subject token was issued to another client'
  if (err instanceof jose.JWSSignatureVerificationFailed) return 'the subject token is not signed by this IdP'
  return 'the subject token is not an ID token issued by this IdP'
}

export async function startDevIdp (opts: DevIdpOptions): Promise<DevIdp> {
  const host = opts.host ?? '127.0.0.1'
  if (!LOOPBACK.has(host)) throw new TypeError('startDevIdp: host must be a loopback address (127.0.0.1, ::1 or localhost)')
  if (!Array.isArray(opts.clients) || opts.clients.length === 0) throw new TypeError('startDevIdp: at least one client is required')
  const log = opts.log ?? (() => {})
  const policies = crossAppAccessPolicies(opts.clients)
  const { default: Provider, errors } = await loadProvider(log)

  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const signingKey = { ...(await exportJWK(privateKey)), kid: randomBytes(8).toString('hex'), alg: 'ES256', use: 'sig' }

  const server: Server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const issuer = issuerFor(host, (server.address() as AddressInfo).port)

  const extraClaims = opts.claims ?? (() => ({}))
  // Interactive logins and ID-JAGs find accounts the same way, so both name the same subject.
  const findAccount = (sub: string): { accountId: string, claims: () => Promise<Record<string, unknown>> } | undefined => {
    if (opts.disabledAccounts?.has(sub) === true) return undefined
    return {
      accountId: sub,
      async claims () {
        const email = sub.includes('@') ? sub : `${sub}@dev.local`
        const base: Record<string, unknown> = { sub, email, email_verified: true, name: sub }
        if (sub.includes('@')) base.hd = sub.slice(sub.indexOf('@') + 1)
        return { ...base, ...extraClaims(sub), sub }
      }
    }
  }
  const configuration: Record<string, unknown> = {
    clients: opts.clients.map((c) => ({
      client_id: c.client_id,
      ...(c.client_secret === undefined ? {} : { client_secret: c.client_secret }),
      redirect_uris: c.redirect_uris,
      grant_types: ['authorization_code', 'refresh_token', ...(policies.has(c.client_id) ? [TOKEN_EXCHANGE] : [])],
      // An enterprise app's ID tokens say when the user logged in; its ID-JAGs pass that on.
      ...(policies.has(c.client_id) ? { require_auth_time: true } : {}),
      response_types: ['code'],
      token_endpoint_auth_method: c.client_secret === undefined ? 'none' : 'client_secret_basic',
      id_token_signed_response_alg: 'ES256'
    })),
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified', 'hd'],
      profile: ['name', 'preferred_username']
    },
    conformIdTokenClaims: opts.claimsInIdToken === false,
    // draft-ietf-oauth-identity-assertion-authz-grant: how an IdP says it issues ID-JAGs.
    ...(policies.size > 0 ? { discovery: { identity_chaining_requested_token_types_supported: [ID_JAG] } } : {}),
    features: {
      devInteractions: { enabled: true },
      revocation: {
        enabled: true,
        allowedPolicy: (_ctx: unknown, client: { clientId: string }, token: { clientId: string }) => token.clientId === client.clientId
      },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: false }
    },
    pkce: { required: () => true },
    issueRefreshToken: (_ctx: unknown, client: { grantTypeAllowed: (grant: string) => boolean }) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => opts.rotateRefreshTokens !== false,
    // Tokens outlive the browser session: the tests drive the login with a throw-away cookie jar.
    expiresWithSession: () => false,
    ttl: {
      AccessToken: opts.accessTokenTtl ?? 3600,
      AuthorizationCode: 60,
      IdToken: opts.idTokenTtl ?? 3600,
      RefreshToken: 24 * 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 24 * 3600
    },
    clientBasedCORS: () => false,
    findAccount: async (_ctx: unknown, sub: string) => findAccount(sub),
    async renderError (ctx: { type: string, body: string }, out: Record<string, unknown>) {
      ctx.type = 'html'
      const error = String(out.error).replace(/[^\w.-]/g, '')
      ctx.body = `<!DOCTYPE html><html><head><title>dev IdP error</title></head><body><h1>${error}</h1></body></html>`
    }
  }

  const idJagTtl = opts.idJagTtl ?? 300
  const refuse = (error: string, description: string): Error => new errors.CustomOIDCProviderError(error, description)

  /** RFC 8693 token exchange: one of this IdP's ID tokens in, an ID-JAG for another authorization server out. */
  async function exchangeForIdJag (ctx: GrantContext): Promise<void> {
    const { params, client } = ctx.oidc
    if (params.requested_token_type !== ID_JAG) throw refuse('invalid_request', `requested_token_type must be ${ID_JAG}`)
    if (params.subject_token_type !== ID_TOKEN) throw refuse('invalid_request', `subject_token_type must be ${ID_TOKEN}`)
    if (params.subject_token === undefined || params.subject_token === '') throw refuse('invalid_request', 'subject_token is required')
    if (params.actor_token !== undefined || params.actor_token_type !== undefined) throw refuse('invalid_request', 'actor tokens are not used for ID-JAGs')
    if (params.audience === undefined || params.audience === '') throw refuse('invalid_request', 'audience (the issuer of the authorization server the ID-JAG is for) is required')
    // Only clients with a policy are allowed this grant (grant_types), so there is one.
    const target = (policies.get(client.clientId) as AudiencePolicy).get(params.audience)
    if (target === undefined) throw refuse('invalid_target', 'this client may not get ID-JAGs for that audience')
    const { resource } = params
    if (resource !== undefined && !isAbsoluteUrl(resource)) throw refuse('invalid_target', 'resource must be an absolute URL without fragment')

    let subject: { sub: string, auth_time: number }
    try {
      // The ID token must be this IdP's, issued to the client now asking (the draft's audience rule).
      // Issued to an enterprise app, it carries auth_time (require_auth_time).
      const { payload, protectedHeader } = await jwtVerify<{ sub: string, auth_time: number }>(params.subject_token, publicKey, {
        issuer, audience: client.clientId, algorithms: ['ES256'], requiredClaims: ['sub', 'exp', 'iat']
      })
      // Other JWTs of this IdP (an ID-JAG, a logout token) are typed; ID tokens are not.
      if (protectedHeader.typ !== undefined && protectedHeader.typ.toUpperCase() !== 'JWT') throw new Error('typed JWT')
      subject = payload
    } catch (err) {
      throw refuse('invalid_grant', subjectTokenProblem(err))
    }
    const account = findAccount(subject.sub)
    if (account === undefined) throw refuse('invalid_grant', 'the subject\'s account is disabled or no longer exists')

    const requested = (params.scope ?? '').split(' ').filter((s) => s !== '')
    const granted = target.scopes === undefined
      ? requested
      : requested.length === 0 ? [...target.scopes] : requested.filter((s) => target.scopes?.has(s))
    if (requested.length > 0 && granted.length === 0) throw refuse('invalid_scope', 'none of the requested scopes is allowed for this client at that audience')
    const scope = granted.join(' ')

    const claims = await account.claims()
    const now = Math.floor(Date.now() / 1000)
    const idJag = await new SignJWT({
      client_id: target.clientId,
      ...(resource === undefined ? {} : { resource }),
      ...(scope === '' ? {} : { scope }),
      auth_time: subject.auth_time,
      ...pick(claims, ['email', 'email_verified', 'name'])
    })
      .setProtectedHeader({ alg: 'ES256', kid: signingKey.kid, typ: 'oauth-id-jag+jwt' })
      .setIssuer(issuer)
      .setSubject(account.accountId)
      .setAudience(params.audience)
      .setJti(randomUUID())
      .setIssuedAt(now)
      .setExpirationTime(now + idJagTtl)
      .sign(privateKey)
    ctx.body = {
      access_token: idJag,
      issued_token_type: ID_JAG,
      token_type: 'N_A',
      expires_in: idJagTtl,
      ...(scope === '' ? {} : { scope })
    }
  }

  let provider: OidcProviderInstance
  try {
    // The constructor prints its development-mode warnings synchronously.
    const restore = divertNotices(log)
    try {
      provider = new Provider(issuer, configuration)
    } finally {
      restore()
    }
    if (policies.size > 0) {
      provider.registerGrantType(TOKEN_EXCHANGE, exchangeForIdJag, ['audience', 'resource', 'scope', 'subject_token',
        'subject_token_type', 'requested_token_type', 'actor_token', 'actor_token_type'])
    }
    // oidc-provider validates static clients on first use; fail here instead.
    for (const c of opts.clients) await provider.Client.find(c.client_id)
  } catch (err) {
    server.close()
    throw err
  }

  let refreshes = 0
  const countRefresh = (ctx: OidcContext): void => {
    if (ctx.oidc?.params?.grant_type === 'refresh_token') refreshes++
  }
  provider.on('grant.success', countRefresh)
  provider.on('grant.error', countRefresh)
  provider.on('server_error', (_ctx, err) => log(`dev IdP server error: ${String(err)}`))

  const handle = provider.callback()
  let outage: 'none' | 'hang' | number = 'none'
  server.on('request', (req, res) => {
    if (outage === 'none' || req.method !== 'POST' || req.url?.split('?')[0] !== '/token') {
      handle(req, res)
      return
    }
    if (outage === 'hang') return // closeAllConnections() in close() ends it
    res.writeHead(outage, { 'content-type': 'application/json', 'retry-after': '1' })
    res.end(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'simulated outage' }))
  })

  let closing: Promise<void> | undefined
  return {
    issuer,
    refreshCount: () => refreshes,
    tokenOutage: (mode) => { outage = mode },
    close () {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
      return closing
    }
  }
}
