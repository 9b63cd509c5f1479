import { readFileSync } from 'node:fs'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { mcpOAuth, type EncryptionKey, type McpOAuthOptions } from '../../lib/index.js'
import { googleProvider, oidcProvider } from '../../lib/providers/index.js'
import { RedisStore } from '../../lib/storage/redis/index.js'
import { mcpRoutes } from '../mcp.js'
import { serverDefaults } from '../timeouts.js'

/**
 * The example as a deployment runs it: every protection on, state in Redis, secrets read from
 * files (where a secret manager or an orchestrator mounts them), never from literals or plain
 * environment values.
 *
 *   MCP_OAUTH_ISSUER=https://mcp.example.com  REDIS_URL=redis://redis:6379  TRUST_PROXY=1 \
 *   OIDC_ISSUER=https://id.example.com  OIDC_CLIENT_ID=mcp  OIDC_CLIENT_SECRET_FILE=/run/secrets/oidc \
 *   ENCRYPTION_KEYS_FILE=/run/secrets/keys  COOKIE_SECRET_FILE=/run/secrets/cookie \
 *   REGISTRATION_TOKEN_FILE=/run/secrets/registration \
 *   node dist/example/production/server.js
 */

export type Env = Record<string, string | undefined>

/** A secret from the file named by `${name}_FILE`; a value given directly in `name` is refused. */
export function readSecret (env: Env, name: string, required = true): string | undefined {
  if (env[name] !== undefined) throw new Error(`${name} must not be set directly: put the secret in a file and set ${name}_FILE`)
  const path = env[`${name}_FILE`]
  if (path === undefined || path === '') {
    if (required) throw new Error(`${name}_FILE is required`)
    return undefined
  }
  const value = readFileSync(path, 'utf8').trim()
  if (value === '') throw new Error(`${name}_FILE (${path}) is empty`)
  return value
}

/** Key ring file: one `id key` (or `id:key`) per line, oldest first; the last one encrypts. */
export function parseKeys (text: string): EncryptionKey[] {
  return text.split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#')).map(line => {
    const [id, key] = line.split(/[\s:]+/)
    if (id === undefined || key === undefined) throw new Error('ENCRYPTION_KEYS_FILE: each line is "id key"')
    return { id, key }
  })
}

function need (env: Env, name: string): string {
  const value = env[name]
  if (value === undefined || value === '') throw new Error(`${name} is required`)
  return value
}

export function productionOptions (env: Env): McpOAuthOptions {
  const issuer = need(env, 'MCP_OAUTH_ISSUER')
  const provider = env.GOOGLE_CLIENT_ID !== undefined
    ? googleProvider({
      clientId: env.GOOGLE_CLIENT_ID,
      clientSecret: readSecret(env, 'GOOGLE_CLIENT_SECRET') as string,
      ...(env.GOOGLE_HOSTED_DOMAIN !== undefined ? { hostedDomain: env.GOOGLE_HOSTED_DOMAIN } : {})
    })
    : oidcProvider({
      issuer: need(env, 'OIDC_ISSUER'),
      clientId: need(env, 'OIDC_CLIENT_ID'),
      clientSecret: readSecret(env, 'OIDC_CLIENT_SECRET') as string,
      allowInsecureHttp: env.OIDC_ALLOW_HTTP === 'true'
    })
  const keys = parseKeys(readSecret(env, 'ENCRYPTION_KEYS') as string)
  // The deployment secret (consent cookies, refresh derivation, pseudonyms); the file keeps its old name.
  const secret = readSecret(env, 'COOKIE_SECRET') as string
  const registrationToken = readSecret(env, 'REGISTRATION_TOKEN') as string
  const redisUrl = need(env, 'REDIS_URL')
  // Last: the store opens a connection, so everything that can fail has been checked before.
  return {
    issuer,
    resources: [`${issuer}/mcp`],
    scopes: ['mcp:tools'],
    provider,
    store: new RedisStore({ url: redisUrl, prefix: env.REDIS_PREFIX ?? 'mcp-oauth:' }),
    encryption: { keys },
    secret,
    registration: {
      mode: 'token',
      token: registrationToken,
      // Editors that cannot send a registration token may still register native-app redirects.
      trustedSchemes: ['cursor', 'vscode', 'vscode-insiders']
    },
    rateLimit: { enabled: true },
    refreshGraceSeconds: 60
  }
}

export function serverOptions (env: Env): FastifyServerOptions {
  const hops = Number(env.TRUST_PROXY ?? '1')
  if (!Number.isInteger(hops) || hops < 0) throw new Error('TRUST_PROXY is the number of proxies in front of the server (0 = none)')
  return {
    // request.ip comes from X-Forwarded-For only through that many trusted hops.
    trustProxy: hops === 0 ? false : (_address: string, hop: number) => hop < hops,
    logger: { level: env.LOG_LEVEL ?? 'info' },
    bodyLimit: 1024 * 1024,
    ...serverDefaults,
    // Longer than the proxy's idle timeout for its connections to us (60 s on common load balancers):
    // the proxy, not this server, closes an idle connection, so it never sends a request on one that
    // is being closed (a 502 for the client).
    keepAliveTimeout: 72_000
  }
}

export async function buildProduction (env: Env = process.env): Promise<FastifyInstance> {
  if (env.NODE_ENV !== 'production' && env.ALLOW_NON_PRODUCTION !== 'true') {
    throw new Error('the production example expects NODE_ENV=production')
  }
  const app = Fastify(serverOptions(env))
  const options = productionOptions(env)
  try {
    await app.register(mcpOAuth, options)
    await app.register(mcpRoutes, { scopes: ['mcp:tools'] })
    app.get('/healthz', async () => ({ ok: true }))
    await app.ready()
  } catch (err) {
    await app.close().catch(() => {})
    await options.store?.close?.()
    throw err
  }
  return app
}
