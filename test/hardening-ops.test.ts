import t from 'tap'
import { connect } from 'node:net'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { mcpOAuth } from '../lib/index.js'
import { generateToken } from '../lib/oauth/tokens.js'
import { buildExample, options as exampleOptions } from '../example/app.js'
import { serverOptions as productionServerOptions } from '../example/production/app.js'
import { collapseSlashes, serverDefaults } from '../example/timeouts.js'

/**
 * Operations findings of issue 15: no credential from a URL reaches the log under the plugin's
 * paths, matched or not (16); a client that stalls in the middle of a request loses its
 * connection (17).
 */

const ISSUER = 'https://auth.example.com'
const CLIENT = { client_id: 'app', redirect_uris: ['http://127.0.0.1/cb'] }

/** An app whose pino output is captured line by line. */
async function loggedApp (t: { teardown (fn: () => unknown): void }, issuer = ISSUER, server: FastifyServerOptions = {}): Promise<{ app: FastifyInstance, lines: string[] }> {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      lines.push(...String(chunk).split('\n').filter(l => l !== ''))
      done()
    }
  })
  const app = Fastify({ ...server, logger: { level: 'trace', stream } })
  await app.register(mcpOAuth, {
    issuer,
    resources: [`${issuer}/mcp`],
    clients: [CLIENT],
    registration: { mode: 'public' },
    rateLimit: { enabled: false }
  })
  app.get('/open', async () => ({ ok: true }))
  app.post('/mcp', { onRequest: app.mcpOAuth.authenticate() }, async () => ({ ok: true }))
  await app.ready()
  t.teardown(() => app.close())
  return { app, lines }
}

t.test('finding 16: URL credentials never reach the log under the plugin paths, matched or not', async t => {
  const { app, lines } = await loggedApp(t)
  const cases: Array<{ what: string, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: (s: string) => string, body?: string, type?: string }> = [
    { what: 'token endpoint, wrong method', method: 'GET', url: s => `/oauth/token?refresh_token=${s}` },
    { what: 'token endpoint, trailing slash', method: 'POST', url: s => `/oauth/token/?refresh_token=${s}`, body: 'grant_type=refresh_token' },
    { what: 'unknown endpoint', method: 'GET', url: s => `/oauth/tokens?code=${s}` },
    { what: 'the bare /oauth', method: 'GET', url: s => `/oauth?code=${s}` },
    { what: 'doubled slash', method: 'GET', url: s => `/oauth//callback?code=${s}` },
    { what: 'semicolon instead of ?', method: 'GET', url: s => `/oauth/token;refresh_token=${s}` },
    { what: 'unknown endpoint, unparseable JSON body', method: 'POST', url: s => `/oauth/nothing?token=${s}`, body: '{', type: 'application/json' },
    { what: 'metadata, wrong method', method: 'POST', url: s => `/.well-known/oauth-authorization-server?token=${s}`, body: 'x=1' },
    { what: 'metadata, trailing slash', method: 'GET', url: s => `/.well-known/oauth-authorization-server/?token=${s}` },
    { what: 'resource metadata, unknown', method: 'GET', url: s => `/.well-known/oauth-protected-resource/nope?access_token=${s}` },
    { what: 'token endpoint (matched)', method: 'POST', url: s => `/oauth/token?refresh_token=${s}`, body: 'grant_type=refresh_token&refresh_token=x&client_id=app' },
    { what: 'callback (matched)', method: 'GET', url: s => `/oauth/callback?code=${s}&state=${s}` },
    { what: 'registration management (matched)', method: 'DELETE', url: s => `/oauth/register/app?registration_access_token=${s}` }
  ]
  for (const c of cases) {
    const secret = generateToken('refreshToken')
    const before = lines.length
    const res = await app.inject({
      method: c.method,
      url: c.url(secret),
      ...(c.body !== undefined ? { payload: c.body, headers: { 'content-type': c.type ?? 'application/x-www-form-urlencoded' } } : {})
    })
    t.ok(res.statusCode >= 400 && res.statusCode < 500, `${c.what}: answered ${res.statusCode}`)
    const logged = lines.slice(before)
    t.ok(logged.some(l => l.includes('"incoming request"')), `${c.what}: the request was logged`)
    const leaked = logged.filter(l => l.includes(secret))
    t.same(leaked, [], `${c.what}: the credential is not in the log`)
    t.notOk(res.body.includes(secret), `${c.what}: nor echoed in the answer`)
  }
  // The path stays in the log: an operator still sees which near-miss URL was called.
  const secret = generateToken('refreshToken')
  const before = lines.length
  t.equal((await app.inject({ method: 'GET', url: `/oauth/token?refresh_token=${secret}` })).statusCode, 404)
  const logged = lines.slice(before).map(l => JSON.parse(l) as { msg?: string, req?: { url?: string, method?: string }, res?: { statusCode?: number } })
  t.same(logged.find(l => l.msg === 'incoming request')?.req, { method: 'GET', url: '/oauth/token', remoteAddress: '127.0.0.1' })
  t.equal(logged.find(l => l.msg === 'request completed')?.res?.statusCode, 404, 'and its outcome')
})

t.test('finding 16: with the examples\' server options, doubled slashes are routed to the plugin and logged path-only', async t => {
  const { app, lines } = await loggedApp(t, ISSUER, serverDefaults)
  for (const url of ['//oauth/token', '//oauth//token', '//oauth/nothing', '///.well-known//oauth-authorization-server/x']) {
    const secret = generateToken('refreshToken')
    const before = lines.length
    const res = await app.inject({ method: 'GET', url: `${url}?refresh_token=${secret}` })
    t.equal(res.statusCode, 404, `${url}: not found`)
    t.ok(lines.slice(before).some(l => l.includes('"incoming request"')), `${url}: logged`)
    t.same(lines.slice(before).filter(l => l.includes(secret)).map(l => l.replace(secret, 'SECRET')), [], `${url}: without the credential`)
    t.notOk(res.body.includes(secret))
  }
  t.equal(collapseSlashes({ url: '//oauth//token?next=//x//y#//z' }), '/oauth/token?next=//x//y#//z', 'the path only: the query is left as sent')
})

t.test('finding 16: under an issuer with a path, the same; the application\'s own routes keep logging their query', async t => {
  const { app, lines } = await loggedApp(t, 'https://auth.example.com/tenant')
  const secret = generateToken('refreshToken')
  await app.inject({ method: 'GET', url: `/tenant/oauth/token?refresh_token=${secret}` })
  await app.inject({ method: 'GET', url: `/.well-known/oauth-authorization-server/tenant/?refresh_token=${secret}` })
  t.same(lines.filter(l => l.includes(secret)), [], 'nothing under the plugin paths')
  t.equal((await app.inject({ method: 'GET', url: '/open?q=visible-open' })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/elsewhere?q=visible-404' })).statusCode, 404)
  t.equal((await app.inject({ method: 'GET', url: '/oauthx?q=visible-sibling' })).statusCode, 404)
  for (const value of ['visible-open', 'visible-404', 'visible-sibling']) {
    t.ok(lines.some(l => l.includes('"incoming request"') && l.includes(value)), `the application's request line keeps its query (${value})`)
  }
  t.ok(lines.some(l => l.includes('Route GET:/elsewhere?q=visible-404 not found')), 'and its not-found line is Fastify\'s')
})

/**
 * Open a connection, send `data`, then nothing: the time until the server closes it, and what it
 * answered; undefined when it was still open after `limitMs` (then we close it).
 */
async function stall (port: number, data: string, limitMs: number): Promise<{ closedAfter: number | undefined, answer: string }> {
  return await new Promise(resolve => {
    const socket = connect(port, '127.0.0.1')
    const started = performance.now()
    let answer = ''
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ closedAfter: undefined, answer })
    }, limitMs)
    socket.on('connect', () => { socket.write(data) })
    socket.on('data', (chunk: Buffer) => { answer += chunk.toString('latin1') })
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      resolve({ closedAfter: performance.now() - started, answer })
    })
  })
}

/** Requests a slow-loris client starts and never finishes. */
const STALLED = {
  'part of the headers': 'POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n',
  'the headers and part of the body': 'POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n' +
    'Content-Length: 200\r\n\r\ngrant_type=refresh_token&refresh_token='
}
/** The examples must cut such a client off within this (their timeouts plus a loaded machine's slack). */
const CUT_WITHIN = 15_000

t.test('finding 17: the examples cut off a client that stalls in the middle of a request', async t => {
  // `npm start` runs example/app.ts through fastify-cli --options, which builds the server with the
  // exported `options`; the production example builds it with serverOptions().
  const example = await buildExample({ HOST: '127.0.0.1' }, { ...exampleOptions, logger: false })
  t.teardown(() => example.close())
  await example.listen({ port: 0, host: '127.0.0.1' })
  const production = Fastify({ ...productionServerOptions({ TRUST_PROXY: '1' }), logger: false })
  // The same request as at the example: a form POST that waits for its whole body.
  production.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => { done(null, body) })
  production.post('/oauth/token', async () => ({ ok: true }))
  t.teardown(() => production.close())
  await production.listen({ port: 0, host: '127.0.0.1' })

  const servers = { 'example/app.ts': example, 'example/production': production }
  const runs = Object.entries(servers).flatMap(([name, app]) => Object.entries(STALLED).map(async ([what, data]) => {
    const port = (app.server.address() as { port: number }).port
    return { name, what, ...await stall(port, data, CUT_WITHIN) }
  }))
  for (const { name, what, closedAfter, answer } of await Promise.all(runs)) {
    t.ok(closedAfter !== undefined, `${name}, ${what}: connection closed by the server (after ${closedAfter?.toFixed(0) ?? 'more than ' + CUT_WITHIN} ms)`)
    t.match(answer, /^HTTP\/1\.1 408 /, `${name}, ${what}: 408 Request Timeout`)
  }
  // A well-behaved client is unaffected.
  const port = (example.server.address() as { port: number }).port
  t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 200)
})
