/**
 * Forked processes of the benchmark: servers (server.ts) and the memory probe (memory.ts). Each one
 * is killed when the runner stops, whatever way it stops.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Ready, Reply, Request, ServerSpec } from './protocol.js'

const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL')
})

/** Fork a TypeScript file of this folder with the runner's own loader (`process.execArgv`) plus `execArgv`. */
export function forkHere (file: string, args: string[], execArgv: string[] = []): ChildProcess {
  return forkFile(fileURLToPath(new URL(file, import.meta.url)), args, execArgv)
}

/** The same for a file anywhere (BENCH_BASELINE: another checkout's server.ts, still with this runner's loader). */
function forkFile (path: string, args: string[], execArgv: string[] = []): ChildProcess {
  const child = fork(path, args, {
    execArgv: [...process.execArgv, ...execArgv],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  live.add(child)
  child.once('exit', () => { live.delete(child) })
  return child
}

/** Disconnect (the child then closes and exits by itself), SIGKILL after `graceMs`. */
export async function stopChild (child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>(resolve => { child.once('exit', () => { resolve() }) })
  if (child.connected) child.disconnect()
  else child.kill('SIGTERM')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, graceMs)
  await exited
  clearTimeout(timer)
}

/** Resolves with the first IPC message of a child, or rejects when it exits first or takes too long. */
export function firstMessage<T> (child: ChildProcess, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { done(); reject(new Error(`no answer from the child within ${timeoutMs} ms`)) }, timeoutMs)
    const onMessage = (message: T) => { done(); resolve(message) }
    const onExit = (code: number | null) => { done(); reject(new Error(`the child exited (code ${code}) before answering`)) }
    const done = () => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never

/** A forked benchmark server. */
export class BenchServer {
  readonly port: number
  readonly accessToken: string | undefined
  readonly #child: ChildProcess
  #next = 0
  readonly #waiting = new Map<number, { resolve: (r: Reply) => void, reject: (e: Error) => void }>()

  private constructor (child: ChildProcess, ready: Ready) {
    this.#child = child
    this.port = ready.port
    this.accessToken = ready.accessToken
    child.on('message', (message: Reply) => {
      const waiter = this.#waiting.get(message.id)
      if (waiter === undefined) return
      this.#waiting.delete(message.id)
      if (message.error !== undefined) waiter.reject(new Error(message.error))
      else waiter.resolve(message)
    })
    child.once('exit', (code) => {
      for (const waiter of this.#waiting.values()) waiter.reject(new Error(`the server exited (code ${code})`))
      this.#waiting.clear()
    })
  }

  /**
   * Fork a server (this folder's server.ts, or `serverFile`: another checkout's, which imports that
   * checkout's lib/); resolves once it listens, or with the reason this configuration cannot be built.
   */
  static async start (spec: ServerSpec, serverFile = fileURLToPath(new URL('./server.ts', import.meta.url))): Promise<BenchServer | { unsupported: string }> {
    const child = forkFile(serverFile, [JSON.stringify(spec)])
    const ready = await firstMessage<Ready>(child, 60_000).catch(async (err: Error) => {
      await stopChild(child)
      throw err
    })
    if (ready.unsupported !== undefined) {
      await stopChild(child)
      return { unsupported: ready.unsupported }
    }
    return new BenchServer(child, ready)
  }

  #ask (request: WithoutId<Request>): Promise<Reply> {
    const id = this.#next++
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject })
      this.#child.send({ ...request, id } as Request)
    })
  }

  /** CPU time the server has used so far (user + system), in microseconds. */
  async cpuMicros (): Promise<number> {
    return (await this.#ask({ op: 'cpu' })).cpuMicros ?? 0
  }

  /** Fresh single-use credentials: refresh tokens or authorization codes. */
  async mint (grant: 'refresh' | 'code', n: number): Promise<string[]> {
    return (await this.#ask({ op: 'mint', grant, n })).items ?? []
  }

  /** Revoke the grants of refresh tokens that were minted and not used. */
  async discard (items: string[]): Promise<void> {
    await this.#ask({ op: 'discard', items })
  }

  /**
   * Guard servers: nanoseconds per call of the guard's hook, called in process with a request
   * object of its own (no HTTP). It trains the hook's inline caches on that object: ask a server
   * that serves no measured traffic.
   */
  async hookCost (): Promise<number> {
    return (await this.#ask({ op: 'hook-cost' })).nsPerCall ?? 0
  }

  /** Start a CPU profile of the server (BENCH_PROFILE). */
  async profileStart (): Promise<void> {
    await this.#ask({ op: 'profile-start' })
  }

  /** Stop it and write it to `file` (a .cpuprofile, for Chrome DevTools or speedscope). */
  async profileStop (file: string): Promise<void> {
    await this.#ask({ op: 'profile-stop', file })
  }

  stop (): Promise<void> {
    return stopChild(this.#child)
  }
}
