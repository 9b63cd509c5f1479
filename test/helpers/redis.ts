import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * A real redis-server for tests, started as a child process on a free loopback port, with its
 * working directory in a fresh temporary folder. Tests need only the `redis-server` binary on the
 * PATH (Debian: `apt-get install -y redis-server`); nothing runs as a system service.
 */

export interface RedisServerOptions {
  /** Port to listen on; default a free one. `restart()` keeps it. */
  port?: number
  /** Append-only file with fsync on every write, so data survives `restart()`. Default off. */
  appendonly?: boolean
  /** Extra `redis-server` arguments, e.g. `['--maxmemory', '10mb']`. */
  args?: string[]
}

export interface RedisServer {
  readonly port: number
  readonly url: string
  /** The live process id, or undefined while stopped. */
  readonly pid: number | undefined
  /** SIGTERM (SIGKILL after 2 s); resolves when the process has exited. Idempotent. */
  stop (): Promise<void>
  /** Start again on the same port and directory. */
  start (): Promise<void>
  /** stop() + start(). */
  restart (): Promise<void>
  /** stop() and remove the working directory. Use in teardown. */
  destroy (): Promise<void>
}

/** Whether `redis-server` can be run at all. */
export function redisServerAvailable (): boolean {
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' })
  return r.error === undefined && r.status === 0
}

/** A loopback port nobody listens on right now. */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      srv.close(() => { resolve(port) })
    })
  })
}

/** Send PING over a raw socket; true when the answer is +PONG. */
async function ping (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = createConnection({ host: '127.0.0.1', port })
    let reply = ''
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => { done(false) })
    socket.once('error', () => { done(false) })
    socket.once('connect', () => { socket.write('PING\r\n') })
    socket.on('data', chunk => {
      reply += chunk.toString()
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'))
    })
  })
}

const live = new Set<ChildProcess>()
let exitHookInstalled = false

/** Whatever happens to the test process, no redis-server outlives it. */
function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL')
  })
}

export async function startRedisServer (opts: RedisServerOptions = {}): Promise<RedisServer> {
  installExitHook()
  const port = opts.port ?? await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'mcp-oauth-redis-'))
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--save', '',
    '--daemonize', 'no',
    ...(opts.appendonly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
    ...(opts.args ?? [])
  ]
  let child: ChildProcess | undefined
  let output = ''

  async function start (): Promise<void> {
    if (child) return
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = proc
    live.add(proc)
    output = ''
    proc.stdout?.on('data', (b: Buffer) => { output = (output + b.toString()).slice(-4000) })
    proc.stderr?.on('data', (b: Buffer) => { output = (output + b.toString()).slice(-4000) })
    proc.once('exit', () => {
      live.delete(proc)
      if (child === proc) child = undefined
    })
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) break
      if (await ping(port)) return
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    await stop()
    throw new Error(`redis-server did not answer PING on port ${port}:\n${output}`)
  }

  async function stop (): Promise<void> {
    const proc = child
    if (!proc) return
    child = undefined
    if (proc.exitCode !== null || proc.signalCode !== null) {
      live.delete(proc)
      return
    }
    const exited = new Promise<void>(resolve => { proc.once('exit', () => { resolve() }) })
    proc.kill('SIGTERM')
    const timer = setTimeout(() => { proc.kill('SIGKILL') }, 2000)
    await exited
    clearTimeout(timer)
    live.delete(proc)
  }

  await start()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid () { return child?.pid },
    stop,
    start,
    async restart () {
      await stop()
      await start()
    },
    async destroy () {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
