import t from 'tap'
import { redisServerAvailable, startRedisServer, type RedisServer, type RedisServerOptions } from './redis.js'

/**
 * Run a file's Redis tests against a redis-server of their own (a child process on a free loopback
 * port, destroyed at the end). All they need is the binary (`apt-get install -y redis-server`).
 * Without it they are skipped, with the reason, on a developer machine; under CI they fail, since a
 * silent skip there would hide the whole Redis side.
 */
export async function withRedisServer (what: string, tests: (server: RedisServer) => void, opts: RedisServerOptions = {}): Promise<void> {
  if (!redisServerAvailable()) {
    if (process.env.CI) {
      t.fail(`redis-server is not on the PATH but CI is set: install it (apt-get install -y redis-server); ${what} is untested`)
      return
    }
    // ==========================================================================================
    //   redis-server not installed: Redis tests skipped  (apt-get install -y redis-server)
    // ==========================================================================================
    t.comment(`redis-server not installed: ${what} skipped`)
    t.test(what, { skip: 'redis-server not installed: Redis tests skipped' }, () => {})
    return
  }
  const server = await startRedisServer(opts)
  t.teardown(() => server.destroy())
  tests(server)
}

/** Retry an operation until it stops throwing (a reconnection takes up to a second). */
export async function eventually<T> (fn: () => Promise<T>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (Date.now() > deadline) throw err
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
}
