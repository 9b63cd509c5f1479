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
 */

import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { randomBytes } from 'node:crypto'
import { exportJWK, generateKeyPair } from 'jose'

export interface DevIdpClient {
  client_id: string
  /** Absent: a public client (token endpoint auth method `none`). */
  client_secret?: string
  redirect_uris: string[]
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
interface OidcProviderInstance {
  Client: { find(id: string): Promise<unknown> }
  on(event: string, listener: (ctx: OidcContext, err?: Error) => void): void
  callback(): (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void
}
type OidcProviderClass = new (issuer: string, configuration: Record<string, unknown>) => OidcProviderInstance

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

let loading: Promise<OidcProviderClass> | undefined

/** Loads oidc-provider once; on Node 20 its import prints an "unsupported runtime" notice. */
function loadProvider (log: (msg: string) => void): Promise<OidcProviderClass> {
  if (loading === undefined) {
    // A non-literal specifier: the package ships no type declarations, so it is typed by hand above.
    const specifier: string = 'oidc-provider'
    const restore = divertNotices(log)
    loading = import(specifier)
      .then((mod: { default: OidcProviderClass }) => mod.default)
      .finally(restore)
  }
  return loading
}

function issuerFor (host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`
}

export async function startDevIdp (opts: DevIdpOptions): Promise<DevIdp> {
  const host = opts.host ?? '127.0.0.1'
  if (!LOOPBACK.has(host)) throw new TypeError('startDevIdp: host must be a loopback address (127.0.0.1, ::1 or localhost)')
  if (!Array.isArray(opts.clients) || opts.clients.length === 0) throw new TypeError('startDevIdp: at least one client is required')
  const log = opts.log ?? (() => {})
  const Provider = await loadProvider(log)

  const { privateKey } = await generateKeyPair('ES256', { extractable: true })
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
  const configuration: Record<string, unknown> = {
    clients: opts.clients.map((c) => ({
      client_id: c.client_id,
      ...(c.client_secret === undefined ? {} : { client_secret: c.client_secret }),
      redirect_uris: c.redirect_uris,
      grant_types: ['authorization_code', 'refresh_token'],
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
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 24 * 3600
    },
    clientBasedCORS: () => false,
    async findAccount (_ctx: unknown, sub: string) {
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
    },
    async renderError (ctx: { type: string, body: string }, out: Record<string, unknown>) {
      ctx.type = 'html'
      const error = String(out.error).replace(/[^\w.-]/g, '')
      ctx.body = `<!DOCTYPE html><html><head><title>dev IdP error</title></head><body><h1>${error}</h1></body></html>`
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
