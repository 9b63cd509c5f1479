/**
 * A benchmark server, forked by test/bench/run.ts with a ServerSpec (JSON) as its argument. It
 * listens on a free loopback port, says `ready` over IPC, mints credentials on request, and exits
 * when the runner disconnects (or dies).
 */
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { Session } from 'node:inspector/promises'
import Fastify, { type FastifyInstance, type onRequestHookHandler } from 'fastify'
import formbody from '@fastify/formbody'
import { compactVerify, createLocalJWKSet, type JSONWebKeySet } from 'jose'
import { mcpOAuth, type McpOAuthOptions } from '../../lib/index.js'
import { JWT_BEARER_GRANT } from '../../lib/oauth/jwt.js'
import { generateId, generateToken, hashToken } from '../../lib/oauth/tokens.js'
import type { CodeRecord } from '../../lib/storage/contract.js'
import { TOKEN_BENCH, type Ready, type Reply, type Request, type ServerSpec } from './protocol.js'
import { startOidcBench } from './oidc.js'

const spec = JSON.parse(process.argv[2] ?? '{}') as ServerSpec
const send = (message: Ready | Reply): void => { process.send?.(message) }

/** Everything the runner can ask of a server. */
interface Bench {
  port: number
  mint (grant: 'refresh' | 'code', n: number): Promise<string[]>
  discard (refreshTokens: string[]): Promise<void>
  /** Guard servers: ns per call of the guard hook, in process. */
  hookCost? (): number
  close (): Promise<void>
}

const base: McpOAuthOptions = {
  issuer: TOKEN_BENCH.issuer,
  resources: [TOKEN_BENCH.resource],
  scopes: [TOKEN_BENCH.scope]
}

async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  return typeof address === 'object' && address !== null ? address.port : 0
}

/** `/bare` and the same handler behind the guard at `/protected`. */
async function guardServer (s: Extract<ServerSpec, { kind: 'guard' }>): Promise<Bench & { accessToken: string }> {
  const app = Fastify({ logger: false })
  const opts: McpOAuthOptions = {
    ...base,
    rateLimit: s.rateLimit
      // Per-user budget far above what a run sends: this measures the limiter, not its 429s.
      ? { mcp: { max: 1_000_000_000, windowSeconds: 60 } }
      : { enabled: false }
  }
  // Untyped on purpose: on a plugin without a `metrics` option, registration fails and the row says n/a.
  if (s.metrics) Object.assign(opts, { metrics: { enabled: true, token: 'bench-metrics-token-0123456789' } })
  if (s.store === 'redis') {
    const { RedisStore } = await import('../../lib/storage/redis/index.js')
    opts.store = new RedisStore({ url: s.redisUrl as string, commandTimeoutMs: 2000, ...(s.redisCache === false ? { cache: false } : {}) })
  }
  await app.register(mcpOAuth, opts)
  const handler = async () => ({ ok: true })
  app.get('/bare', handler)
  app.get('/protected', { onRequest: app.mcpOAuth.authenticate({ scopes: [TOKEN_BENCH.scope] }) }, handler)
  // The same handler behind an onRequest hook that does nothing: what any hook costs in Fastify.
  app.get('/hooked', { onRequest: (_request, _reply, done) => { done() } }, handler)
  const port = await listen(app)
  const grant = await app.mcpOAuth.grants.createGrant({
    userId: 'bench-user', email: 'bench@example.com', clientId: TOKEN_BENCH.clientId, scopes: [TOKEN_BENCH.scope], resource: TOKEN_BENCH.resource
  })
  const { access_token: accessToken } = await app.mcpOAuth.grants.issueTokens(grant)
  return {
    port,
    accessToken,
    mint: async () => { throw new Error('guard servers mint nothing') },
    discard: async () => {},
    hookCost: () => hookCost(app.mcpOAuth.authenticate({ scopes: [TOKEN_BENCH.scope] }), accessToken),
    close: () => app.close()
  }
}

/**
 * The guard's own cost: its onRequest hook called in a loop with what it reads of a request (the
 * query, the Authorization header) and what it writes (`mcpAuth`), a valid token, the memory store.
 * What the HTTP measurement adds on top is Fastify running one more hook, and the machine.
 */
function hookCost (hook: onRequestHookHandler, accessToken: string): number {
  const request = { query: {}, headers: { authorization: `Bearer ${accessToken}` }, mcpAuth: null }
  const reply = {}
  let admitted = 0
  const done = (): void => { admitted++ }
  const call = hook as unknown as (request: unknown, reply: unknown, done: () => void) => void
  const CALLS = 200_000
  const round = (): number => {
    const started = process.hrtime.bigint()
    for (let i = 0; i < CALLS; i++) call(request, reply, done)
    return Number(process.hrtime.bigint() - started) / CALLS
  }
  round()
  const rounds = Array.from({ length: 7 }, round).sort((a, b) => a - b)
  // Every call must have gone through (a 401 is cheaper and would flatter the figure).
  if (admitted !== CALLS * 8) throw new Error(`the guard admitted ${admitted} of ${CALLS * 8} calls`)
  return rounds[3] as number
}

/**
 * The plugin's token endpoint, plus `/bare-form`: a route that parses the same form body and does nothing
 * (and, in the machine part, `/bare-verify`: the same with one ID-JAG signature checked by jose).
 */
async function tokenServer (s: Extract<ServerSpec, { kind: 'token' }>): Promise<Bench> {
  const app = Fastify({ logger: false })
  await app.register(mcpOAuth, {
    ...base,
    rateLimit: { enabled: false },
    clients: [
      { client_id: TOKEN_BENCH.clientId, redirect_uris: [TOKEN_BENCH.redirectUri] },
      {
        client_id: TOKEN_BENCH.machine.clientId,
        client_secret: TOKEN_BENCH.machine.secret,
        grant_types: s.idp === undefined ? ['client_credentials'] : ['client_credentials', JWT_BEARER_GRANT]
      },
      ...(s.machineKey !== undefined
        ? [{
            client_id: TOKEN_BENCH.machineJwt.clientId,
            token_endpoint_auth_method: 'private_key_jwt' as const,
            jwks: { keys: [s.machineKey] },
            grant_types: ['client_credentials' as const]
          }]
        : [])
    ],
    ...(s.idp !== undefined ? { enterprise: { trustedIssuers: [{ issuer: s.idp.issuer, jwks_uri: s.idp.jwksUri }] } } : {})
  })
  await app.register(async (scope) => {
    await scope.register(formbody)
    scope.post('/bare-form', async (request) => ({ ok: typeof (request.body as Record<string, unknown>).grant_type === 'string' }))
    if (s.idp !== undefined) {
      // The floor of any jwt-bearer grant that checks the ID-JAG's signature with jose: the same form
      // route, plus that one verification (the IdP's key set fetched once, as the plugin caches it),
      // and nothing else: no claims, no client, no replay check, no token.
      const keys = createLocalJWKSet(await (await fetch(s.idp.jwksUri)).json() as JSONWebKeySet)
      scope.post('/bare-verify', async (request) => {
        await compactVerify(String((request.body as Record<string, unknown>).assertion), keys, { algorithms: ['ES256'] })
        return { ok: true }
      })
    }
  })
  const port = await listen(app)
  const { grants, storage } = app.mcpOAuth
  const challenge = createHash('sha256').update(TOKEN_BENCH.codeVerifier).digest('base64url')
  let user = 0
  return {
    port,
    async mint (kind, n) {
      const items: string[] = []
      for (let i = 0; i < n; i++) {
        const userId = `bench-user-${user++}`
        if (kind === 'refresh') {
          const grant = await grants.createGrant({
            userId, email: `${userId}@example.com`, clientId: TOKEN_BENCH.clientId, scopes: [TOKEN_BENCH.scope], resource: TOKEN_BENCH.resource
          })
          items.push((await grants.issueTokens(grant)).refresh_token)
        } else {
          // What the upstream callback stores (lib/flow/authorize.ts), with a lifetime that outlasts the run.
          const code = generateToken('authorizationCode')
          const now = Date.now()
          const record: CodeRecord = {
            clientId: TOKEN_BENCH.clientId,
            redirectUri: TOKEN_BENCH.redirectUri,
            codeChallenge: challenge,
            codeChallengeMethod: 'S256',
            scopes: [TOKEN_BENCH.scope],
            resource: TOKEN_BENCH.resource,
            grantId: generateId(),
            userId,
            email: `${userId}@example.com`,
            issuedAt: now,
            expiresAt: now + 3_600_000
          }
          await storage.saveCode(hashToken(code), record)
          items.push(code)
        }
      }
      return items
    },
    async discard (tokens) {
      const now = Date.now()
      for (const token of tokens) {
        const record = await storage.getRefreshToken(hashToken(token), now)
        if (record !== null) await storage.revokeGrant(record.grantId)
      }
    },
    close: () => app.close()
  }
}

async function main (): Promise<void> {
  let bench: Bench
  let accessToken: string | undefined
  try {
    if (spec.kind === 'guard') {
      const g = await guardServer(spec)
      bench = g
      accessToken = g.accessToken
    } else if (spec.kind === 'token') {
      bench = await tokenServer(spec)
    } else {
      bench = await startOidcBench(spec.machineKey)
    }
  } catch (err) {
    send({ type: 'ready', port: 0, unsupported: err instanceof Error ? err.message : String(err) })
    process.disconnect?.()
    return
  }
  let inspector: Session | undefined
  process.on('message', (message: Request) => {
    const reply = async (): Promise<Reply> => {
      if (message.op === 'cpu') {
        const { user, system } = process.cpuUsage()
        return { type: 'reply', id: message.id, cpuMicros: user + system }
      }
      if (message.op === 'profile-start') {
        if (inspector === undefined) {
          inspector = new Session()
          inspector.connect()
          await inspector.post('Profiler.enable')
          await inspector.post('Profiler.setSamplingInterval', { interval: 100 })
        }
        await inspector.post('Profiler.start')
        return { type: 'reply', id: message.id }
      }
      if (message.op === 'profile-stop') {
        const { profile } = await (inspector as Session).post('Profiler.stop')
        await writeFile(message.file, JSON.stringify(profile))
        return { type: 'reply', id: message.id }
      }
      if (message.op === 'hook-cost') {
        if (bench.hookCost === undefined) throw new Error('not a guard server')
        return { type: 'reply', id: message.id, nsPerCall: bench.hookCost() }
      }
      if (message.op === 'discard') {
        await bench.discard(message.items)
        return { type: 'reply', id: message.id }
      }
      return { type: 'reply', id: message.id, items: await bench.mint(message.grant, message.n) }
    }
    reply().then(send, (err: unknown) => { send({ type: 'reply', id: message.id, error: String(err) }) })
  })
  // The runner going away (normally or not) ends this process.
  process.once('disconnect', () => {
    const timer = setTimeout(() => process.exit(0), 2000)
    timer.unref()
    bench.close().finally(() => process.exit(0))
  })
  send({ type: 'ready', port: bench.port, ...(accessToken !== undefined ? { accessToken } : {}) })
}

await main()
