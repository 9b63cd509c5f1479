import t from 'tap'
import { execFile } from 'node:child_process'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { generateKeyPairSync } from 'node:crypto'
import { KeyRing } from '../lib/security/keyring.js'
import { bearerParams, resourceFits } from '../lib/cli/doctor.js'
import { quote } from '../lib/cli/http.js'
import { buildApp } from './helpers/app.js'
import { discoveryServer, loopbackNames, rawServer, runDoctor, type DoctorRun } from './helpers/doctor.js'
import { startExample } from './helpers/example.js'
import { startDevIdp } from '../example/dev-idp.js'
import { freePort } from './helpers/login.js'
import { selfSignedCert } from './helpers/tls.js'

const ORIGIN = 'https://app.example.com'

/** A run's status for each check id. */
function statuses (r: DoctorRun): Record<string, string> {
  return Object.fromEntries([...r.checks].map(([id, c]) => [id, c.status]))
}

/** What a stack trace's frames look like. */
const STACK = /\n\s+at /

t.test('usage: unknown commands and flags exit 2 with the usage; --help exits 0', async (t) => {
  for (const argv of [[], ['bogus'], ['doctor'], ['doctor', 'a', 'b'], ['doctor', 'not a url'], ['doctor', 'ftp://x/mcp'], ['doctor', 'https://x/mcp#f'],
    ['doctor', 'https://x/mcp', '--nope'], ['doctor', 'https://x/mcp', '--timeout', '0'], ['doctor', 'https://x/mcp', '--timeout', '1e3'],
    ['doctor', 'https://x/mcp', '--origin', 'https://a.example/path'], ['doctor', 'https://x/mcp', '--origin'],
    ['generate-key', '--kind', 'rsa'], ['generate-key', 'extra'], ['generate-key', '--json']]) {
    const r = await runDoctor(argv)
    t.equal(r.code, 2, argv.join(' '))
    t.match(r.err, /^fastify-mcp-oauth: .+\n\nUsage:/, `${argv.join(' ')}: the problem, then the usage`)
    t.equal(r.out, '')
  }
  t.match((await runDoctor(['doctor', 'https://x/mcp', '--nope'])).err, /Unknown option '--nope'/)
  t.match((await runDoctor(['doctor', 'https://x/mcp', '--timeout', 'soon'])).err, /--timeout takes milliseconds/)
  for (const argv of [['--help'], ['-h'], ['help'], ['doctor', '--help'], ['generate-key', '-h']]) {
    const r = await runDoctor(argv)
    t.equal(r.code, 0, argv.join(' '))
    t.match(r.out, /^Usage:\n {2}fastify-mcp-oauth doctor <mcp-url>/)
  }
})

t.test('generate-key prints keys the key ring and the options take, fresh on every run', async (t) => {
  const first = await runDoctor(['generate-key'])
  t.equal(first.code, 0)
  const key = /^MCP_OAUTH_ENCRYPTION_KEY=([A-Za-z0-9_-]{43})$/m.exec(first.out)?.[1] as string
  t.ok(key, 'an encryption key in the example\'s variable')
  const line = new RegExp(`^(\\d{4}-\\d{2}) ${key}$`, 'm').exec(first.out)
  t.ok(line, 'the same key as a key-file line, id first')
  const ring = new KeyRing([{ id: line?.[1] as string, key }])
  t.equal(ring.open(ring.seal('upstream token', 'grant-1'), 'grant-1'), 'upstream token')
  const secret = /^MCP_OAUTH_SECRET=(\S+)$/m.exec(first.out)?.[1] as string
  t.ok(secret.length >= 32, 'the deployment secret is long enough for the secret option')
  const second = await runDoctor(['generate-key'])
  t.not(second.out, first.out, 'fresh keys')

  const onlyEncryption = await runDoctor(['generate-key', '--kind', 'encryption'])
  t.match(onlyEncryption.out, /MCP_OAUTH_ENCRYPTION_KEY=/)
  t.notMatch(onlyEncryption.out, /MCP_OAUTH_SECRET=/)
  const derived = await runDoctor(['generate-key', '--kind', 'cookie', '--kind', 'pseudonym'])
  t.equal(derived.out.match(/^MCP_OAUTH_SECRET=/mg)?.length, 1, 'cookie and pseudonym keys come from one secret')
  t.notMatch(derived.out, /ENCRYPTION_KEY=/)
})

t.test('the running example passes every check', async (t) => {
  const { mcp } = await startExample(t)
  const r = await runDoctor(['doctor', mcp.href, '--json'])
  t.equal(r.code, 0)
  const seen = statuses(r)
  for (const id of ['challenge', 'www-authenticate', 'prm-header', 'prm-path', 'prm-root', 'resource', 'as-oauth', 'as-root', 'issuer', 'pkce',
    'registration', 'iss-parameter', 'clock', 'https']) t.equal(seen[id], 'pass', id)
  t.same(Object.entries(seen).filter(([, s]) => s !== 'pass').sort(), [['as-oidc', 'skip'], ['cors', 'skip'], ['jwks', 'skip']])

  const text = await runDoctor(['doctor', mcp.href])
  t.equal(text.code, 0)
  const lines = text.out.trimEnd().split('\n')
  t.equal(lines[0], `doctor ${mcp.href}`)
  t.match(lines.at(-1), /^0 failed, 0 warned, 14 passed, 3 skipped$/)
  t.match(lines[1], /^PASS {2}challenge +POST http:\/\/127\.0\.0\.1:\d+\/mcp without a token: 401$/)
})

t.test('CORS for a browser origin: allowed by the plugin\'s cors option, refused for another origin', async (t) => {
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const { app } = await buildApp(t, { issuer, resources: [`${issuer}/mcp`], cors: { origins: [ORIGIN] }, registration: { mode: 'public' } })
  await app.listen({ port, host: '127.0.0.1' })
  const allowed = await runDoctor(['doctor', `${issuer}/mcp`, '--origin', ORIGIN + '/', '--json'])
  const seen = statuses(allowed)
  for (const id of ['cors-mcp', 'cors-challenge', 'cors-prm', 'cors-metadata', 'cors-token', 'cors-register']) t.equal(seen[id], 'pass', id)
  t.equal(allowed.code, 0)

  const other = await runDoctor(['doctor', `${issuer}/mcp`, '--origin', 'https://evil.example', '--json'])
  t.equal(other.code, 1)
  for (const id of ['cors-mcp', 'cors-challenge', 'cors-prm', 'cors-metadata', 'cors-token', 'cors-register']) t.equal(other.checks.get(id)?.status, 'fail', id)
  t.match(other.checks.get('cors-challenge')?.impact, /browser hides the 401/)
})

t.test('an issuer with a trailing slash the authorization_servers entry lacks fails "issuer"', async (t) => {
  const { mcp } = await discoveryServer(t, (shape, origin) => { (shape.metadata as Record<string, unknown>).issuer = origin + '/' })
  const r = await runDoctor(['doctor', mcp, '--json'])
  t.equal(r.code, 1)
  const issuer = r.checks.get('issuer')
  t.equal(issuer?.status, 'fail')
  t.match(issuer?.detail, /metadata issuer "http:\/\/127\.0\.0\.1:\d+\/" is not the authorization_servers entry "http:\/\/127\.0\.0\.1:\d+"/)
  t.match(issuer?.impact, /IssuerMismatchError/)
  t.same(Object.entries(statuses(r)).filter(([, s]) => s === 'fail').map(([id]) => id), ['issuer'], 'the one failure named')
})

t.test('the trailing slash the other way round is the one difference the SDK v2 tolerates: a warning', async (t) => {
  const { mcp } = await discoveryServer(t, (shape, origin) => {
    for (const doc of [shape.prmPath, shape.prmRoot]) (doc as Record<string, unknown>).authorization_servers = [origin + '/']
  })
  const r = await runDoctor(['doctor', mcp, '--json'])
  t.equal(r.code, 0)
  t.equal(r.checks.get('issuer')?.status, 'warn')
  t.match(r.checks.get('issuer')?.impact, /oauth4webapi/)
})

t.test('an http resource behind an https issuer fails "https" and "resource"', async (t) => {
  const name = 'mcp.doctor.test'
  const tls = selfSignedCert(t, [name])
  const { mcp } = await discoveryServer(t, (shape, origin) => {
    const plain = origin.replace('https:', 'http:')
    for (const doc of [shape.prmPath, shape.prmRoot]) (doc as Record<string, unknown>).resource = `${plain}/mcp`
  }, { name, tls })
  t.match(mcp, /^https:\/\/mcp\.doctor\.test:\d+\/mcp$/)
  const r = await runDoctor(['doctor', mcp, '--json'], { lookup: loopbackNames([name]), ca: tls.cert })
  t.equal(r.code, 1)
  const https = r.checks.get('https')
  t.equal(https?.status, 'fail')
  t.match(https?.detail, /not https: resource "http:\/\/mcp\.doctor\.test:\d+\/mcp" \(TLS ends at a proxy/)
  t.equal(r.checks.get('resource')?.status, 'fail')
  t.equal(r.checks.get('issuer')?.status, 'pass', 'the rest of the chain is sound')
})

t.test('plain http on a non-loopback name fails "https" even when everything else agrees', async (t) => {
  const name = 'plain.doctor.test'
  const { mcp } = await discoveryServer(t, undefined, { name })
  const r = await runDoctor(['doctor', mcp, '--json'], { lookup: loopbackNames([name]) })
  t.equal(r.code, 1)
  t.same(Object.entries(statuses(r)).filter(([, s]) => s === 'fail').map(([id]) => id), ['https'])
  t.match(r.checks.get('https')?.detail, /MCP endpoint "http:\/\/plain\.doctor\.test/)
})

t.test('a missing path-inserted protected resource metadata document fails "prm-path"', async (t) => {
  const { mcp } = await discoveryServer(t, shape => { shape.prmPath = null; shape.prmRoot = null })
  const r = await runDoctor(['doctor', mcp, '--json'])
  t.equal(r.code, 1)
  t.equal(r.checks.get('prm-path')?.status, 'fail')
  t.match(r.checks.get('prm-path')?.detail, /oauth-protected-resource\/mcp: 404 \(not found\)/)
  t.equal(r.checks.get('prm-header')?.status, 'fail', 'the challenge named it')
  t.equal(r.checks.get('prm-root')?.status, 'fail')
  t.equal(r.checks.get('discovery')?.status, 'skip', 'nothing beyond it is judged')

  const { mcp: rootOnly } = await discoveryServer(t, shape => { shape.prmPath = null; shape.challenge = 'Bearer scope="mcp:tools"' })
  const fallback = await runDoctor(['doctor', rootOnly, '--json'])
  t.equal(fallback.code, 0, 'clients fall back to a root document that names the resource')
  t.equal(fallback.checks.get('prm-path')?.status, 'warn')
  t.equal(fallback.checks.get('www-authenticate')?.status, 'warn')
  t.match(fallback.checks.get('prm-root')?.detail, /\(used\)$/)
})

t.test('a wrong resource in the metadata fails "resource"; a parent of the endpoint warns', async (t) => {
  const { mcp } = await discoveryServer(t, (shape, origin) => {
    for (const doc of [shape.prmPath, shape.prmRoot]) (doc as Record<string, unknown>).resource = `${origin}/mcp/`
  })
  const r = await runDoctor(['doctor', mcp, '--json'])
  t.equal(r.code, 1)
  t.equal(r.checks.get('resource')?.status, 'fail')
  t.match(r.checks.get('resource')?.detail, /"http:\/\/127\.0\.0\.1:\d+\/mcp\/" does not name "http:\/\/127\.0\.0\.1:\d+\/mcp"/)
  t.same(Object.entries(statuses(r)).filter(([, s]) => s === 'fail').map(([id]) => id), ['resource'])

  const { mcp: parent } = await discoveryServer(t, (shape, origin) => {
    for (const doc of [shape.prmPath, shape.prmRoot]) (doc as Record<string, unknown>).resource = origin
  })
  const p = await runDoctor(['doctor', parent, '--json'])
  t.equal(p.checks.get('resource')?.status, 'warn')
  t.equal(p.code, 0)
})

t.test('metadata shortcomings: PKCE, registration, iss, the challenge, JWKS', async (t) => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = privateKey.export({ format: 'jwk' })
  const { mcp } = await discoveryServer(t, (shape, origin) => {
    const md = shape.metadata as Record<string, unknown>
    delete md.code_challenge_methods_supported
    delete md.registration_endpoint
    delete md.authorization_response_iss_parameter_supported
    md.jwks_uri = `${origin}/.well-known/oauth-protected-resource`
    shape.challenge = 'Basic realm="mcp"'
    shape.prmRoot = { keys: [jwk], resource: `${origin}/mcp`, authorization_servers: [origin] }
  })
  const r = await runDoctor(['doctor', mcp, '--json'])
  t.equal(r.code, 1)
  t.same(statuses(r), {
    ...statuses(r),
    pkce: 'fail',
    registration: 'warn',
    'iss-parameter': 'warn',
    'www-authenticate': 'fail',
    jwks: 'fail'
  })
  t.match(r.checks.get('pkce')?.impact, /must refuse to proceed/)
  t.match(r.checks.get('jwks')?.detail, /publishes private key material/)

  const { mcp: plainPkce } = await discoveryServer(t, (shape, origin) => {
    const md = shape.metadata as Record<string, unknown>
    md.code_challenge_methods_supported = ['plain']
    md.jwks_uri = `${origin}/.well-known/oauth-protected-resource`
    shape.prmRoot = { keys: [{ kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }], resource: `${origin}/mcp`, authorization_servers: [origin] }
    shape.challenge = null
  })
  const p = await runDoctor(['doctor', plainPkce, '--json'])
  t.equal(p.checks.get('pkce')?.status, 'fail')
  t.equal(p.checks.get('jwks')?.status, 'pass')
  t.equal(p.checks.get('www-authenticate')?.status, 'warn')
  t.equal(p.checks.get('prm-path')?.status, 'pass', 'found without the challenge')
})

t.test('the challenge itself: unprotected, forbidden, redirected', async (t) => {
  const base = await rawServer(t, app => {
    app.post('/open', async () => ({ jsonrpc: '2.0', id: 1, result: {} }))
    app.post('/forbidden', async (_request, reply) => reply.code(403).send({}))
    app.post('/elsewhere', async (_request, reply) => reply.redirect('https://mcp.example.net/mcp', 307))
    app.post('/moved', async (_request, reply) => reply.redirect('/mcp', 308))
    app.post('/nowhere', async (_request, reply) => reply.code(307).header('location', 'http://[broken').send())
    app.post('/mcp', async (_request, reply) => reply.code(401).header('www-authenticate', 'Bearer').send({}))
  })
  const open = await runDoctor(['doctor', `${base}/open`, '--json'])
  t.match(open.checks.get('challenge'), { status: 'fail', detail: /200: the endpoint is not protected/ })
  t.match((await runDoctor(['doctor', `${base}/forbidden`, '--json'])).checks.get('challenge'), { status: 'fail', impact: /a 403 without a token/ })
  const elsewhere = await runDoctor(['doctor', `${base}/elsewhere`, '--json'])
  t.match(elsewhere.checks.get('challenge'), { status: 'fail', detail: /307 to "https:\/\/mcp\.example\.net\/mcp", not followed/ })
  t.match((await runDoctor(['doctor', `${base}/nowhere`, '--json'])).checks.get('challenge'), { status: 'fail', detail: /307 to "http:\/\/\[broken", not followed/ })
  const moved = await runDoctor(['doctor', `${base}/moved`, '--json'])
  t.match(moved.checks.get('challenge'), { status: 'warn', detail: /^redirected to http:\/\/127\.0\.0\.1:\d+\/mcp; / })
  t.match(moved.checks.get('www-authenticate'), { status: 'warn', detail: 'Bearer' })
  const { mcp } = await discoveryServer(t, (shape, origin) => { shape.challenge = `Bearer resource_metadata="${origin}/prm"` }, {
    routes: app => app.get('/prm', async (_request, reply) => reply.redirect('https://metadata.example.net/prm', 301))
  })
  t.match((await runDoctor(['doctor', mcp, '--json'])).checks.get('prm-header'),
    { status: 'fail', detail: /\/prm \(named by the challenge\): 301 to "https:\/\/metadata\.example\.net\/prm", not followed/ })
  t.equal(moved.checks.get('prm-root')?.status, 'fail', 'no metadata anywhere')
})

t.test('clock skew from the Date header', async (t) => {
  const base = await rawServer(t, app => {
    app.post('/mcp', async (_request, reply) => reply.code(401).header('date', new Date(Date.now() - 3600_000).toUTCString()).send({}))
    app.post('/nodate', async (_request, reply) => reply.code(401).header('date', 'yesterday').send({}))
  })
  const r = await runDoctor(['doctor', `${base}/mcp`, '--json'])
  t.match(r.checks.get('clock'), { status: 'fail', detail: /the server's clock is 3\d{3} s behind this machine's/ })
  t.match((await runDoctor(['doctor', `${base}/nodate`, '--json'])).checks.get('clock'), { status: 'warn', detail: 'no usable Date header' })
})

t.test('bad input: a clear line each, in bounded time, never a stack trace', async (t) => {
  t.test('host down (a closed port)', async (t) => {
    const port = await freePort()
    const r = await runDoctor(['doctor', `http://127.0.0.1:${port}/mcp`])
    t.equal(r.code, 1)
    t.match(r.out, `FAIL  challenge  POST http://127.0.0.1:${port}/mcp: connection refused: nothing listens at 127.0.0.1:${port} -> clients cannot reach the MCP endpoint at all\n`)
    t.ok(r.ms < 5000, `${r.ms} ms`)
    t.notMatch(r.out + r.err, STACK, 'no stack trace')
  })

  t.test('a name that does not resolve', async (t) => {
    const r = await runDoctor(['doctor', 'https://mcp.doctor.invalid/mcp', '--json'])
    t.match(r.checks.get('challenge')?.detail, /the name mcp\.doctor\.invalid does not resolve|failed/)
    t.notMatch(r.out + r.err, STACK, 'no stack trace')
  })

  t.test('a slow server: every request has a timeout, and the run a budget', async (t) => {
    const base = await rawServer(t, app => {
      app.post('/hang', () => new Promise(() => {}))
      app.post('/mcp', async (_request, reply) => reply.code(401).header('www-authenticate', 'Bearer').send({}))
      app.get('/.well-known/*', () => new Promise(() => {}))
    })
    const hang = await runDoctor(['doctor', `${base}/hang`, '--timeout', '300'])
    t.match(hang.out, /FAIL {2}challenge {2}POST http:\/\/127\.0\.0\.1:\d+\/hang: no complete answer within 300 ms/)
    t.ok(hang.ms < 1500, `${hang.ms} ms`)
    const slowMetadata = await runDoctor(['doctor', `${base}/mcp`, '--timeout', '300', '--json'])
    t.match(slowMetadata.checks.get('prm-path')?.detail, /no complete answer within 300 ms/)
    t.match(slowMetadata.checks.get('prm-root')?.detail, /no complete answer within 300 ms/)
    t.ok(slowMetadata.ms < 300 * 6 + 1000, `${slowMetadata.ms} ms, within the budget`)
    t.notMatch(hang.out + hang.err, STACK, 'no stack trace')
  })

  t.test('HTML, broken JSON, JSON that is no object, a huge body', async (t) => {
    const base = await rawServer(t, app => {
      app.post('/mcp', async (request, reply) => reply.code(401)
        .header('www-authenticate', `Bearer resource_metadata="http://${request.headers.host}/doc/${(request.query as { doc?: string }).doc ?? ''}"`).send({}))
      app.get('/doc/html', async (_request, reply) => reply.type('text/html').send('<!doctype html><title>Sign in</title>'))
      app.get('/doc/broken', async (_request, reply) => reply.type('application/json').send('{"resource": "x", \u001b[31m'))
      app.get('/doc/array', async () => [1, 2])
      app.get('/doc/huge', async (_request, reply) => reply.type('application/json').send(Readable.from((function * () {
        for (let i = 0; i < 64; i++) yield Buffer.alloc(64 * 1024, 0x20)
      })())))
      app.get('/doc/declared', async (_request, reply) => reply.type('application/json').send(Buffer.alloc(1024 * 1024, 0x20)))
    })
    const cases: Array<[string, RegExp]> = [
      ['html', /answered HTML, not JSON/],
      ['broken', /not valid JSON \(\d+ bytes starting "\{\\"resource\\": \\"x\\", \\u001b\[31m"\)/],
      ['array', /JSON, but not an object/],
      ['huge', /answer \(200\) larger than 256 KiB: stopped reading/],
      ['declared', /answer \(200\) larger than 256 KiB: stopped reading/]
    ]
    for (const [doc, expected] of cases) {
      const r = await runDoctor(['doctor', `${base}/mcp?doc=${doc}`, '--json'])
      t.equal(r.code, 1, doc)
      t.match(r.checks.get('prm-header'), { status: 'fail', detail: expected }, doc)
      t.ok(r.ms < 5000, `${doc}: ${r.ms} ms`)
      t.notMatch(r.out + r.err, STACK, 'no stack trace')
    }
    const text = await runDoctor(['doctor', `${base}/mcp?doc=broken`])
    t.notOk(text.out.includes('\u001b'), 'no terminal escape from the server reaches the terminal')
    t.match(text.out, '\\u001b[31m', 'it is shown escaped')
  })

  t.test('a redirect loop, and too many redirects', async (t) => {
    const base = await rawServer(t, app => {
      app.post('/mcp', async (_request, reply) => reply.redirect('/loop', 307))
      app.post('/loop', async (_request, reply) => reply.redirect('/mcp', 307))
      app.post('/hop/:n', async (request, reply) => reply.redirect(`/hop/${Number((request.params as { n: string }).n) + 1}`, 308))
    })
    const loop = await runDoctor(['doctor', `${base}/mcp`])
    t.match(loop.out, /FAIL {2}challenge {2}POST .*\/mcp: redirect loop: http:\/\/127\.0\.0\.1:\d+\/mcp -> http:\/\/127\.0\.0\.1:\d+\/loop -> http:\/\/127\.0\.0\.1:\d+\/mcp/)
    const hops = await runDoctor(['doctor', `${base}/hop/0`])
    t.match(hops.out, /more than 5 redirects/)
    t.ok(loop.ms + hops.ms < 5000)
    t.notMatch(loop.out + loop.err, STACK, 'no stack trace')
  })
})

t.test('the bin runs as a child process', async (t) => {
  const run = promisify(execFile)
  const main = fileURLToPath(new URL('../lib/cli/main.ts', import.meta.url))
  const env = { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' }
  const keys = await run(process.execPath, ['--import=@tapjs/typescript/import', main, 'generate-key', '--kind', 'encryption'], { env, timeout: 60_000 })
  t.match(keys.stdout, /^# Encryption key/)
  t.match(keys.stdout, /\nMCP_OAUTH_ENCRYPTION_KEY=[A-Za-z0-9_-]{43}\n/)
  const bad = await run(process.execPath, ['--import=@tapjs/typescript/import', main, 'doctor', '--bogus'], { env, timeout: 60_000 })
    .then(() => ({ code: 0, stderr: '' }), (err: { code: number, stderr: string }) => err)
  t.equal(bad.code, 2)
  t.match(bad.stderr, /^fastify-mcp-oauth: Unknown option '--bogus'\n\nUsage:/)
})

t.test('pure helpers: the Bearer challenge, resource fit, quoting', async (t) => {
  t.same([...bearerParams('Bearer resource_metadata="https://a/b", scope="x y"') ?? []], [['resource_metadata', 'https://a/b'], ['scope', 'x y']])
  t.same([...bearerParams('DPoP algs="ES256", Bearer realm=mcp, error="invalid_token", error_description="a \\"b\\""') ?? []],
    [['realm', 'mcp'], ['error', 'invalid_token'], ['error_description', 'a "b"']])
  t.equal(bearerParams('Basic realm="x"'), null)
  t.same([...bearerParams('bearer') ?? []], [])
  const mcp = new URL('https://h.example/api/mcp')
  t.equal(resourceFits('https://h.example/api/mcp', mcp), 'identical')
  t.equal(resourceFits('https://h.example/api', mcp), 'parent')
  t.equal(resourceFits('https://h.example/ap', mcp), 'other')
  t.equal(resourceFits('https://other.example/api/mcp', mcp), 'other')
  t.equal(resourceFits('not a url', mcp), 'other')
  t.equal(quote('a\u202eb\u009b'), '"a\\u202eb\\u009b"')
  t.equal(quote('x'.repeat(10), 4), '"xxxx..."')
})

t.test('an issuer with a path: RFC 8414 path insertion, then the OpenID locations in the MCP order', async (t) => {
  const tenant = (origin: string) => ({
    issuer: `${origin}/tenant`,
    authorization_endpoint: `${origin}/tenant/authorize`,
    token_endpoint: `${origin}/tenant/token`,
    code_challenge_methods_supported: ['S256', 'plain'],
    client_id_metadata_document_supported: true,
    jwks_uri: 'not a url'
  })
  const { mcp } = await discoveryServer(t, (shape, origin) => {
    for (const doc of [shape.prmPath]) (doc as Record<string, unknown>).authorization_servers = [`${origin}/tenant`, origin]
    shape.prmRoot = null
    shape.metadata = null
  }, {
    routes: app => app.get('/tenant/.well-known/openid-configuration', async (request) => tenant(`http://${request.headers.host}`))
  })
  const r = await runDoctor(['doctor', mcp, '--json'])
  t.match(r.checks.get('as-oauth'), { status: 'pass', detail: /oauth-authorization-server\/tenant: 404 \(not found\): clients go on/ })
  t.match(r.checks.get('as-oidc'), { status: 'pass', detail: /openid-configuration\/tenant: 404/ })
  t.match(r.checks.get('as-oidc-append'), { status: 'pass', detail: /\/tenant\/\.well-known\/openid-configuration: 200, issuer ".*\/tenant" \(used \(the first of 2\)\)/ })
  t.match(r.checks.get('as-root'), { status: 'warn', impact: /2025-03-26/ })
  t.match(r.checks.get('prm-root'), { status: 'pass', detail: /404 \(not found\) \(not needed: clients find the challenge's URL first\)/ })
  t.equal(r.checks.get('pkce')?.status, 'warn')
  t.equal(r.checks.get('registration')?.status, 'pass')
  t.match(r.checks.get('jwks'), { status: 'fail', detail: /jwks_uri "not a url" is not an absolute URL/ })

  const { mcp: failing } = await discoveryServer(t, (shape, origin) => {
    (shape.prmPath as Record<string, unknown>).authorization_servers = [`${origin}/tenant`]
  }, { routes: app => app.get('/.well-known/oauth-authorization-server/tenant', async (_request, reply) => reply.code(500).send({})) })
  const f = await runDoctor(['doctor', failing, '--json'])
  t.match(f.checks.get('as-oauth'), { status: 'fail', detail: /: 500$/, impact: /clients stop at the first location/ })
  t.notOk(f.checks.has('as-oidc'), 'no location after the one that stops clients')
  t.match(f.checks.get('as-root'), { status: 'pass', detail: /: 200, issuer/ })
  t.match(f.checks.get('as-metadata'), { status: 'fail', detail: /no authorization server metadata for ".*\/tenant"/ })
})

t.test('unusable URLs in the challenge and the metadata', async (t) => {
  const { mcp } = await discoveryServer(t, shape => { shape.challenge = 'Bearer resource_metadata="/relative"' })
  t.match((await runDoctor(['doctor', mcp, '--json'])).checks.get('www-authenticate'), { status: 'fail', detail: /resource_metadata "\/relative" is not an absolute URL/ })
  const { mcp: badAs } = await discoveryServer(t, shape => {
    shape.challenge = null
    for (const doc of [shape.prmPath, shape.prmRoot]) (doc as Record<string, unknown>).authorization_servers = ['auth server']
  })
  t.match((await runDoctor(['doctor', badAs, '--json'])).checks.get('as-metadata'), { status: 'fail', detail: /authorization_servers\[0\] "auth server" is not an absolute URL/ })
})

t.test('CORS half done: a preflight nobody answers, a wildcard that hides the challenge, another origin allowed', async (t) => {
  const { mcp } = await discoveryServer(t, undefined, {
    routes: app => app.addHook('onSend', async (request, reply) => {
      if (request.url === '/mcp') reply.header('access-control-allow-origin', '*')
      else if (request.url.startsWith('/.well-known/oauth-protected-resource')) reply.header('access-control-allow-origin', 'https://other.example')
      else if (request.url === '/token') reply.header('access-control-allow-origin', ORIGIN)
    })
  })
  const r = await runDoctor(['doctor', mcp, '--origin', ORIGIN, '--json'])
  t.match(r.checks.get('cors-mcp'), { status: 'fail', detail: /preflight for POST .*\/mcp: 404 \(a preflight needs a 2xx\)/ })
  t.match(r.checks.get('cors-challenge'), { status: 'warn', detail: /does not expose WWW-Authenticate/ })
  t.match(r.checks.get('cors-prm'), { status: 'fail', detail: /allows "https:\/\/other\.example", not https:\/\/app\.example\.com/ })
  t.match(r.checks.get('cors-metadata'), { status: 'fail', detail: /has no Access-Control-Allow-Origin/ })
  t.match(r.checks.get('cors-token'), { status: 'pass', detail: /POST .*\/token \(no code\): 404, allows https:\/\/app\.example\.com/ })
  t.equal(r.checks.get('cors-register')?.status, 'fail')
})

t.test('an OpenID provider as the authorization server (oidc-provider): its metadata and public JWKS pass', async (t) => {
  const idp = await startDevIdp({ clients: [{ client_id: 'c', redirect_uris: ['http://127.0.0.1/cb'] }] })
  t.teardown(() => idp.close())
  const { mcp } = await discoveryServer(t, shape => {
    for (const doc of [shape.prmPath, shape.prmRoot]) (doc as Record<string, unknown>).authorization_servers = [idp.issuer]
  })
  const r = await runDoctor(['doctor', mcp, '--json'])
  t.match(r.checks.get('as-oauth'), { status: 'pass', detail: `GET ${idp.issuer}/.well-known/oauth-authorization-server: 200, issuer "${idp.issuer}" (used)` })
  t.equal(r.checks.get('as-oidc')?.status, 'skip')
  t.equal(r.checks.get('issuer')?.status, 'pass')
  t.match(r.checks.get('jwks'), { status: 'pass', detail: /: \d+ public key\(s\)/ })
  t.equal(r.checks.get('as-root')?.status, 'pass', 'the MCP server\'s own root document')
})
