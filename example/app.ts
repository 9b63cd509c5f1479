import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import { mcpOAuth, type McpOAuthOptions } from '../lib/index.js'
import { randomBytes } from 'node:crypto'
import type { Provider } from '../lib/providers/types.js'
import { googleProvider, oidcProvider } from '../lib/providers/index.js'
import { startDevIdp } from './dev-idp.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import { mcpRoutes, TOOLS_SCOPE, UPSTREAM_SCOPE, type McpRoutesOptions } from './mcp.js'
import { serverDefaults } from './timeouts.js'
import type { StaticClient } from '../lib/options/schema.js'
import { JWT_BEARER_GRANT } from '../lib/oauth/jwt.js'

/**
 * A runnable MCP server protected by fastify-mcp-oauth.
 *
 *   npm run build && fastify start --options dist/example/app.js
 *
 * Environment: PORT (3000), HOST (127.0.0.1), MCP_OAUTH_ISSUER (http://HOST:PORT), LOG_LEVEL (info);
 * GOOGLE_CLIENT_ID/GOOGLE_CLIENT_SECRET (GOOGLE_HOSTED_DOMAIN), or OIDC_ISSUER/OIDC_CLIENT_ID/
 * OIDC_CLIENT_SECRET; MCP_OAUTH_REGISTRATION_TOKEN or MCP_OAUTH_PUBLIC_REGISTRATION=true;
 * MCP_OAUTH_SECRET (formerly MCP_OAUTH_COOKIE_SECRET); MCP_OAUTH_ENCRYPTION_KEY (from generateKey()); REDIS_URL;
 * lifetimes in seconds, to watch a refresh happen: MCP_OAUTH_ACCESS_TOKEN_TTL, MCP_OAUTH_REFRESH_TOKEN_TTL,
 * MCP_OAUTH_GRANT_TTL, MCP_OAUTH_REFRESH_GRACE_SECONDS, MCP_OAUTH_UPSTREAM_RECHECK_SECONDS;
 * MCP_OAUTH_XAA_SECRET (development IdP only: Cross App Access for example/xaa-client.ts).
 * Fastify CLI itself listens on PORT; give it the address with `--address` or FASTIFY_ADDRESS.
 */

export type ExampleEnv = Record<string, string | undefined>

export interface ExampleConfig {
  port: number
  host: string
  issuer: string
  /** The MCP endpoint, which is also the resource indicator of its tokens. */
  resource: string
  /** Every scope the plugin offers: the one /mcp needs, and the one a client steps up to for `upstream_token`. */
  scopes: string[]
}

export function configFromEnv (env: ExampleEnv = process.env): ExampleConfig {
  const rawPort = env.PORT ?? '3000'
  const port = Number(rawPort)
  if (!/^\d+$/.test(rawPort) || port > 65535) throw new Error(`PORT must be a port number, not "${rawPort}"`)
  const host = env.HOST ?? '127.0.0.1'
  // A wildcard bind address is not somewhere a browser can go: advertise the loopback address instead.
  const issuer = env.MCP_OAUTH_ISSUER ?? `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`
  return { port, host, issuer, resource: `${issuer}/mcp`, scopes: [TOOLS_SCOPE, UPSTREAM_SCOPE] }
}

/** Plugin options from environment variables, each in whole seconds. */
const LIFETIME_VARIABLES = {
  MCP_OAUTH_ACCESS_TOKEN_TTL: (s: number) => ({ ttl: { accessToken: s } }),
  MCP_OAUTH_REFRESH_TOKEN_TTL: (s: number) => ({ ttl: { refreshToken: s } }),
  MCP_OAUTH_GRANT_TTL: (s: number) => ({ ttl: { grant: s } }),
  MCP_OAUTH_REFRESH_GRACE_SECONDS: (s: number) => ({ refreshGraceSeconds: s }),
  MCP_OAUTH_UPSTREAM_RECHECK_SECONDS: (s: number) => ({ upstreamRecheckSeconds: s })
} satisfies Record<string, (seconds: number) => Partial<McpOAuthOptions>>

/**
 * Token lifetimes and the refresh grace from the environment, so an operator can watch a refresh
 * with `npm start` (MCP_OAUTH_ACCESS_TOKEN_TTL=60, say). Unset or empty: the plugin's default. The
 * plugin checks the ranges; this only refuses what is not a whole number of seconds.
 */
export function lifetimesFromEnv (env: ExampleEnv): Partial<McpOAuthOptions> {
  const options: Partial<McpOAuthOptions> = {}
  for (const [name, option] of Object.entries(LIFETIME_VARIABLES)) {
    const raw = env[name]
    if (raw === undefined || raw === '') continue
    if (!/^\d{1,10}$/.test(raw)) throw new Error(`${name} must be a whole number of seconds, not "${raw.slice(0, 40)}"`)
    const part = option(Number(raw))
    if ('ttl' in part) options.ttl = { ...options.ttl, ...part.ttl }
    else Object.assign(options, part)
  }
  return options
}

/**
 * Cross App Access with the development IdP: an enterprise app registered there, allowed to get
 * ID-JAGs for this server, and the client id those ID-JAGs name here. Both share the secret of
 * MCP_OAUTH_XAA_SECRET; example/xaa-client.ts plays the app, signing its user in at `redirectUri`.
 */
export const XAA = {
  idpClientId: 'enterprise-app',
  clientId: 'enterprise-app-at-mcp',
  redirectUri: 'http://127.0.0.1:3334/callback'
} as const

/** What the help page tells example/xaa-client.ts: where the enterprise IdP is, and the two client ids. */
export interface CrossAppAccessInfo {
  idp: string
  idpClientId: string
  clientId: string
  redirectUri: string
}

/** How users log in: the identity provider chosen from the environment. */
export interface Upstream {
  provider: Provider
  /** A human-readable description for the log and the help page. */
  description: string
  /** True for the embedded development IdP (public registration on, loud warnings). */
  development: boolean
  /** Static clients the plugin needs for this upstream (the enterprise app's, with MCP_OAUTH_XAA_SECRET). */
  clients?: StaticClient[]
  /** Set when the development IdP also acts as an enterprise IdP. */
  crossAppAccess?: CrossAppAccessInfo
  close (): Promise<void>
}

/**
 * Google when GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are set, any OpenID Connect provider when
 * OIDC_ISSUER, OIDC_CLIENT_ID (and OIDC_CLIENT_SECRET) are set, and otherwise an embedded development
 * IdP (oidc-provider on a loopback port, any user name accepted), which production refuses.
 */
export async function upstreamFromEnv (env: ExampleEnv, issuer: string): Promise<Upstream> {
  if (env.GOOGLE_CLIENT_ID !== undefined && env.GOOGLE_CLIENT_ID !== '') {
    if (env.GOOGLE_CLIENT_SECRET === undefined || env.GOOGLE_CLIENT_SECRET === '') throw new Error('GOOGLE_CLIENT_SECRET is required with GOOGLE_CLIENT_ID')
    const hostedDomain = env.GOOGLE_HOSTED_DOMAIN
    return {
      provider: googleProvider({
        clientId: env.GOOGLE_CLIENT_ID,
        clientSecret: env.GOOGLE_CLIENT_SECRET,
        ...(hostedDomain !== undefined && hostedDomain !== '' ? { hostedDomain } : {})
      }),
      description: 'Google',
      development: false,
      close: async () => {}
    }
  }
  if (env.OIDC_ISSUER !== undefined && env.OIDC_ISSUER !== '') {
    if (env.OIDC_CLIENT_ID === undefined || env.OIDC_CLIENT_ID === '') throw new Error('OIDC_CLIENT_ID is required with OIDC_ISSUER')
    const secret = env.OIDC_CLIENT_SECRET
    return {
      provider: oidcProvider({
        issuer: env.OIDC_ISSUER,
        clientId: env.OIDC_CLIENT_ID,
        ...(secret !== undefined && secret !== '' ? { clientSecret: secret } : {})
      }),
      description: `OpenID Connect (${env.OIDC_ISSUER})`,
      development: false,
      close: async () => {}
    }
  }
  if (env.NODE_ENV === 'production') {
    throw new Error('No identity provider configured (set GOOGLE_CLIENT_ID/GOOGLE_CLIENT_SECRET or OIDC_ISSUER/OIDC_CLIENT_ID/OIDC_CLIENT_SECRET); ' +
      'the embedded development IdP is refused when NODE_ENV=production')
  }
  const xaaSecret = env.MCP_OAUTH_XAA_SECRET === '' ? undefined : env.MCP_OAUTH_XAA_SECRET
  // The plugin wants 16 characters too; saying it here names the variable (never its value).
  if (xaaSecret !== undefined && xaaSecret.length < 16) throw new Error('MCP_OAUTH_XAA_SECRET must be at least 16 characters long')
  const secret = randomBytes(24).toString('base64url')
  const idp = await startDevIdp({
    port: env.DEV_IDP_PORT === undefined ? 0 : Number(env.DEV_IDP_PORT),
    clients: [
      { client_id: 'mcp-oauth-example', client_secret: secret, redirect_uris: [`${issuer}/oauth/callback`] },
      ...(xaaSecret === undefined
        ? []
        : [{
            client_id: XAA.idpClientId,
            client_secret: xaaSecret,
            redirect_uris: [XAA.redirectUri],
            crossAppAccess: { [issuer]: { client_id: XAA.clientId, scopes: [TOOLS_SCOPE] } }
          }])
    ]
  })
  return {
    provider: oidcProvider({ issuer: idp.issuer, clientId: 'mcp-oauth-example', clientSecret: secret, name: 'dev-idp' }),
    description: `embedded development IdP at ${idp.issuer} (any user name logs in)`,
    development: true,
    ...(xaaSecret === undefined
      ? {}
      : {
          // The upstream IdP is trusted for ID-JAGs by default: only the app's client is needed here.
          clients: [{ client_id: XAA.clientId, client_secret: xaaSecret, grant_types: [JWT_BEARER_GRANT] }],
          crossAppAccess: { idp: idp.issuer, idpClientId: XAA.idpClientId, clientId: XAA.clientId, redirectUri: XAA.redirectUri }
        }),
    close: () => idp.close()
  }
}

export interface ExampleAppOptions {
  /** Where to read the configuration from; default process.env. */
  env?: ExampleEnv
  /** More plugin options, on top of what the environment says (the Prometheus variant adds `metrics`). */
  oauth?: Partial<McpOAuthOptions>
  /** The MCP endpoint; default the MCP SDK v2 one of ./mcp.ts (./mcp-sdk1.ts has the same for SDK 1.x). */
  mcp?: FastifyPluginAsync<McpRoutesOptions>
}

/** The application plugin: the OAuth plugin, the MCP endpoint and a help page at `/`. */
const exampleApp: FastifyPluginAsync<ExampleAppOptions> = async (fastify, opts) => {
  const env = opts.env ?? process.env
  const config = configFromEnv(env)
  // Read before anything starts: a bad value stops here, with nothing to close.
  const lifetimes = lifetimesFromEnv(env)
  const upstream = await upstreamFromEnv(env, config.issuer)
  fastify.addHook('onClose', () => upstream.close())
  if (upstream.development) {
    fastify.log.warn('*** DEVELOPMENT MODE: users log in at an embedded identity provider that accepts ANY user name; ' +
      'public client registration is on. Set GOOGLE_* or OIDC_* (see README) for real logins. ***')
  } else {
    fastify.log.info(`users log in with ${upstream.description}`)
  }

  const redisUrl = env.REDIS_URL
  const deploymentSecret = env.MCP_OAUTH_SECRET ?? env.MCP_OAUTH_COOKIE_SECRET
  await fastify.register(mcpOAuth, {
    issuer: config.issuer,
    resources: [config.resource],
    scopes: config.scopes,
    provider: upstream.provider,
    // Several replicas (or grants that survive a restart): share state through Redis.
    ...(redisUrl !== undefined && redisUrl !== '' ? { store: new RedisStore({ url: redisUrl }) } : {}),
    registration: upstream.development || env.MCP_OAUTH_PUBLIC_REGISTRATION === 'true'
      ? { mode: 'public' }
      : env.MCP_OAUTH_REGISTRATION_TOKEN !== undefined && env.MCP_OAUTH_REGISTRATION_TOKEN !== ''
        ? { mode: 'token', token: env.MCP_OAUTH_REGISTRATION_TOKEN }
        : { mode: 'off' },
    ...(deploymentSecret !== undefined && deploymentSecret !== '' ? { secret: deploymentSecret } : {}),
    ...(env.MCP_OAUTH_ENCRYPTION_KEY !== undefined && env.MCP_OAUTH_ENCRYPTION_KEY !== ''
      ? { encryption: { keys: [{ id: 'k1', key: env.MCP_OAUTH_ENCRYPTION_KEY }] } }
      : {}),
    ...(upstream.clients === undefined ? {} : { clients: upstream.clients }),
    ...lifetimes,
    ...opts.oauth
  })
  await fastify.register(opts.mcp ?? mcpRoutes, { scopes: [TOOLS_SCOPE], upstreamScope: UPSTREAM_SCOPE })

  const resolved = fastify.mcpOAuth.config
  const help = {
    name: 'fastify-mcp-oauth example',
    issuer: resolved.issuer,
    mcp: config.resource,
    scopes: resolved.scopes,
    login: upstream.description,
    ...(upstream.crossAppAccess === undefined ? {} : { crossAppAccess: upstream.crossAppAccess }),
    metadata: {
      authorizationServer: resolved.origin + resolved.asMetadataPaths[0],
      protectedResource: resolved.resources.map(r => r.metadataUrl)
    }
  }
  fastify.get('/', async () => help)
}

/** Not encapsulated, so `fastify.mcpOAuth` (grants, validator, storage) is reachable from the root instance. */
export const app = fp(exampleApp, { name: 'fastify-mcp-oauth-example', fastify: '5.x' })
export default app

/** Server options that Fastify CLI merges in when started with `--options`. */
export const options: FastifyServerOptions = {
  ...serverDefaults,
  logger: { level: process.env.LOG_LEVEL ?? 'info' }
}

/** The configured example, not listening: for tests and for embedding without Fastify CLI. */
export async function buildExample (
  env: ExampleEnv = process.env,
  serverOptions: FastifyServerOptions = { ...serverDefaults, logger: false },
  appOptions: Omit<ExampleAppOptions, 'env'> = {}
): Promise<FastifyInstance> {
  const instance = Fastify(serverOptions)
  try {
    await instance.register(app, { ...appOptions, env })
    await instance.ready()
  } catch (err) {
    // What started before the failure (the development IdP) stops with the instance.
    await instance.close().catch(() => {})
    throw err
  }
  return instance
}
