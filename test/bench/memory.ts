/**
 * Memory probe, forked by run.ts with --expose-gc: heap per live grant (grant + access token +
 * refresh token records) in the memory store, the heap after they all expire and one sweep pass
 * runs, and the event-loop delay during that pass. Sends a MemoryResult over IPC.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setImmediate as tick } from 'node:timers/promises'
import Fastify from 'fastify'
import { mcpOAuth } from '../../lib/index.js'
import { MemoryStore } from '../../lib/storage/memory/index.js'
import { TOKEN_BENCH } from './protocol.js'

export interface MemoryResult {
  grants: number
  baselineBytes: number
  loadedBytes: number
  afterSweepBytes: number
  perGrantBytes: number
  sweepMs: number
  sweepDelayP99Ms: number
  sweepDelayMaxMs: number
  /** The same process idle for as long, just before: what the machine alone adds. */
  idleDelayP99Ms: number
  remaining: { grants: number, accessTokens: number, refreshTokens: number }
}

/** A dynamically registered client's id (lib/oauth/tokens.ts generateId: 22 characters). */
const CLIENT_ID = 'q0Hn2xFz7XkVYd1cWm9b-A'

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('memory.ts needs --expose-gc')

/** Settled heap: several full collections, with turns of the event loop between them. */
async function settledHeap (): Promise<number> {
  for (let i = 0; i < 4; i++) {
    (gc as () => void)()
    await tick()
  }
  return process.memoryUsage().heapUsed
}

async function main (): Promise<MemoryResult> {
  const n = Number(process.env.BENCH_GRANTS ?? 100_000)
  let clock = Date.now()
  const now = () => clock
  const store = new MemoryStore({ now, sweepIntervalMs: 0 })
  const app = Fastify({ logger: false })
  await app.register(mcpOAuth, {
    issuer: TOKEN_BENCH.issuer,
    resources: [TOKEN_BENCH.resource],
    scopes: [TOKEN_BENCH.scope],
    rateLimit: { enabled: false },
    store,
    now
  })
  await app.ready()
  const { grants, config } = app.mcpOAuth
  // As a real login makes them: the client id and the scopes come from the parsed authorization
  // request (a string and an array of their own for every grant), the user id and the e-mail from
  // the identity provider's answer (a Google-style 21-digit subject).
  const fresh = (s: string) => Buffer.from(s).toString()
  const mint = async (i: number) => {
    const userId = `1${String(i + 1e12).padStart(20, '0')}`
    const grant = await grants.createGrant({
      userId,
      email: `user${i}@example.com`,
      clientId: fresh(CLIENT_ID),
      scopes: fresh(TOKEN_BENCH.scope).split(' '),
      resource: TOKEN_BENCH.resource
    })
    await grants.issueTokens(grant)
  }
  // Warm-up, so that compiled code and the first Map growth are part of the baseline.
  for (let i = 0; i < 2000; i++) await mint(-1 - i)
  clock += (config.ttl.grant + 1) * 1000
  await store.sweep()
  clock = Date.now()

  const baselineBytes = await settledHeap()
  for (let i = 0; i < n; i++) await mint(i)
  const loadedBytes = await settledHeap()

  // Everything expires; one sweep pass reclaims it while the event loop is watched.
  clock += (config.ttl.grant + 1) * 1000
  const idle = monitorEventLoopDelay({ resolution: 1 })
  idle.enable()
  await new Promise(resolve => setTimeout(resolve, 400))
  idle.disable()
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  const started = performance.now()
  await store.sweep()
  const sweepMs = performance.now() - started
  // Let the collection that follows the sweep happen while still watched (it is part of the cost).
  await new Promise(resolve => setTimeout(resolve, 200))
  delay.disable()
  const afterSweepBytes = await settledHeap()
  const stats = await store.stats()
  await app.close()
  return {
    grants: n,
    baselineBytes,
    loadedBytes,
    afterSweepBytes,
    perGrantBytes: (loadedBytes - baselineBytes) / n,
    sweepMs,
    sweepDelayP99Ms: delay.percentile(99) / 1e6,
    sweepDelayMaxMs: delay.max / 1e6,
    idleDelayP99Ms: idle.percentile(99) / 1e6,
    remaining: { grants: stats.grants, accessTokens: stats.accessTokens, refreshTokens: stats.refreshTokens }
  }
}

main().then(
  (result) => { process.send?.(result) },
  (err: unknown) => { process.send?.({ error: String(err instanceof Error ? err.stack : err) }) }
).finally(() => { process.disconnect?.() })
