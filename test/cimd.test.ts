import t, { type Test } from 'tap'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { getDefaultAutoSelectFamily, setDefaultAutoSelectFamily, type AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEFAULT_CUSTOM_SCHEMES, type RedirectPolicy } from '../lib/oauth/redirect.js'
import { OAuthError } from '../lib/errors.js'
import { selfSignedCert } from './helpers/tls.js'
import { CimdResolver, type CimdResolverOptions } from '../lib/clients/cimd.js'
import { isForbiddenAddress } from '../lib/oauth/address.js'
import type { ResolvedAddress } from '../lib/security/fetch.js'

const policy: RedirectPolicy = { allowHttp: false, allowPrivateHosts: false, customSchemes: DEFAULT_CUSTOM_SCHEMES }
const JSON_TYPE = { 'content-type': 'application/json' }

// A self-signed certificate for client.test and localhost (no IP addresses), made fresh for this run.
const { cert, key } = selfSignedCert(t, ['client.test', 'localhost'])

type Handler = (req: IncomingMessage, res: ServerResponse) => void
const routes = new Map<string, Handler>()
const hits = new Map<string, number>()
const seen: Array<{ path: string, host: string | undefined, servername: string | false | undefined }> = []
let connections = 0

const server = createHttpsServer({ key, cert }, (req, res) => {
  const path = req.url ?? ''
  hits.set(path, (hits.get(path) ?? 0) + 1)
  seen.push({ path, host: req.headers.host, servername: (req.socket as TLSSocket).servername ?? undefined })
  const handler = routes.get(path)
  if (handler === undefined) res.writeHead(404).end()
  else handler(req, res)
})
server.on('connection', () => { connections++ })

let plainConnections = 0
const plain = createHttpServer((_req, res) => res.writeHead(500).end())
plain.on('connection', () => { plainConnections++ })

async function listen (s: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => resolve())
  })
  return (s.address() as AddressInfo).port
}
const port = await listen(server)
const plainPort = await listen(plain)
t.teardown(async () => {
  for (const s of [server, plain]) {
    s.closeAllConnections()
    await new Promise(resolve => s.close(resolve))
  }
})

let counter = 0
function unique (name: string): string {
  return `/${name}-${++counter}.json`
}
function url (path: string, host = 'client.test'): string {
  return `https://${host}:${port}${path}`
}
function doc (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { client_id: id, client_name: 'Test Client', redirect_uris: ['https://app.example/callback'], ...extra }
}
/** Serve, at a fresh path, what `body` makes for the document's URL (an object is sent as JSON). */
function serve (name: string, body: (id: string) => unknown, headers: Record<string, string> = JSON_TYPE): string {
  const path = unique(name)
  const id = url(path)
  routes.set(path, (_req, res) => {
    const value = body(id)
    res.writeHead(200, headers).end(typeof value === 'string' || Buffer.isBuffer(value) ? value : JSON.stringify(value))
  })
  return id
}
function route (name: string, handler: Handler): string {
  const path = unique(name)
  routes.set(path, handler)
  return url(path)
}
function hitsOf (id: string): number {
  return hits.get(new URL(id).pathname + new URL(id).search) ?? 0
}

/** A resolver for the loopback test server: the test-only override, a fake name, the test CA. */
function makeResolver (t: Test, opts: Partial<CimdResolverOptions> = {}): { resolver: CimdResolver, lookups: string[] } {
  const lookups: string[] = []
  const resolver = new CimdResolver({
    redirectPolicy: policy,
    allowPrivateAddresses: true,
    ca: cert,
    timeoutMs: 3000,
    lookup: async hostname => {
      lookups.push(hostname)
      return [{ address: '127.0.0.1', family: 4 }]
    },
    ...opts
  })
  t.teardown(() => resolver.close())
  return { resolver, lookups }
}

/** Wait (at most about a second) for a condition set by a server callback. */
async function until (condition: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !condition(); i++) await sleep(10)
}

function refusal (pattern: RegExp): { name: string, error: string, statusCode: number, message: RegExp } {
  return { name: 'OAuthError', error: 'invalid_client', statusCode: 401, message: pattern }
}

t.test('isCimdClientId: an https URL with a path', async t => {
  t.ok(CimdResolver.isCimdClientId('https://example.com/client.json'))
  t.ok(CimdResolver.isCimdClientId('https://example.com/a/../b'), 'malformed ones still go to resolve() for a clear error')
  t.notOk(CimdResolver.isCimdClientId('https://example.com'))
  t.notOk(CimdResolver.isCimdClientId('https://example.com/'))
  t.notOk(CimdResolver.isCimdClientId('http://example.com/client.json'))
  t.notOk(CimdResolver.isCimdClientId('mcp_client_abc123'))
  t.notOk(CimdResolver.isCimdClientId('https://'))
})

t.test('options are checked', async t => {
  t.throws(() => new CimdResolver({ redirectPolicy: policy, timeoutMs: 0 }), RangeError)
  t.throws(() => new CimdResolver({ redirectPolicy: policy, maxBytes: -1 }), RangeError)
  t.throws(() => new CimdResolver({ redirectPolicy: policy, minCacheSeconds: 100, maxCacheSeconds: 10 }), RangeError)
  t.throws(() => new CimdResolver({ redirectPolicy: policy, maxConcurrentFetches: 0 }), RangeError)
  t.throws(() => new CimdResolver({ redirectPolicy: policy, failureCacheSeconds: -1 }), RangeError)
})

t.test('a valid document becomes a public client record', async t => {
  const now = 1_700_000_000_123
  const { resolver, lookups } = makeResolver(t, { now: () => now })
  const id = serve('valid', id => doc(id, {
    client_name: '  Example MCP Client ',
    redirect_uris: ['https://app.example/callback', 'http://127.0.0.1/callback', 'https://app.example/callback'],
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    scope: 'mcp:tools',
    client_uri: 'https://app.example/',
    logo_uri: 'https://app.example/logo.png',
    contacts: ['ops@app.example'],
    software_id: 'example-client',
    software_version: '1.2.3',
    jwks: { keys: [] },
    something_else: 'ignored'
  }))
  const before = seen.length
  const record = await resolver.resolve(id)
  t.strictSame(record, {
    clientId: id,
    redirectUris: ['https://app.example/callback', 'http://127.0.0.1/callback'],
    tokenEndpointAuthMethod: 'none',
    grantTypes: ['authorization_code', 'refresh_token'],
    responseTypes: ['code'],
    applicationType: 'web',
    clientName: 'Example MCP Client',
    metadata: {
      client_uri: 'https://app.example/',
      logo_uri: 'https://app.example/logo.png',
      software_id: 'example-client',
      software_version: '1.2.3',
      contacts: ['ops@app.example']
    },
    clientIdIssuedAt: 1_700_000_000,
    source: 'cimd',
    scope: 'mcp:tools'
  })
  t.strictSame(lookups, ['client.test'], 'the name was resolved once, by the resolver')
  t.equal(hitsOf(id), 1)
  const request = seen.slice(before).find(s => s.path === new URL(id).pathname)
  t.equal(request?.host, `client.test:${port}`, 'Host header is the real name')
  t.equal(request?.servername, 'client.test', 'SNI is the real name')
})

t.test('loopback and custom-scheme redirects make a native client', async t => {
  const { resolver } = makeResolver(t)
  const id = serve('native', id => doc(id, { redirect_uris: ['http://127.0.0.1/callback', 'cursor://anysphere.cursor-mcp/oauth/callback', 'com.example.app:/cb'] }))
  t.equal((await resolver.resolve(id)).applicationType, 'native')
})

t.test('a query string is part of the identifier', async t => {
  const { resolver } = makeResolver(t)
  const path = unique('query')
  const id = url(path) + '?v=2'
  routes.set(path + '?v=2', (_req, res) => res.writeHead(200, JSON_TYPE).end(JSON.stringify(doc(id))))
  t.equal((await resolver.resolve(id)).clientId, id)
})

t.test('TLS is verified against the real host name', async t => {
  const id = serve('tls', id => doc(id))
  const wrong = id.replace('client.test', 'wrong.test')
  const { resolver } = makeResolver(t)
  await t.rejects(resolver.resolve(wrong), refusal(/could not be fetched \(ERR_TLS_CERT_ALTNAME_INVALID\)/), 'certificate is not for this name')
  const { resolver: noCa } = makeResolver(t, { ca: undefined })
  await t.rejects(noCa.resolve(id), refusal(/could not be fetched \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\)/), 'untrusted certificate')
  await t.rejects(resolver.resolve(`https://127.0.0.1:${port}${new URL(id).pathname}`), refusal(/ERR_TLS_CERT_ALTNAME_INVALID/), 'an IP literal is verified as an IP')
  t.equal(hitsOf(id), 0)
})

t.test('the default lookup, and pinning without happy eyeballs', async t => {
  // The system resolver (localhost is in the certificate), with the test-only override.
  const { resolver } = makeResolver(t, { lookup: undefined })
  const path = unique('system-dns')
  const id = `https://localhost:${port}${path}`
  routes.set(path, (_req, res) => res.writeHead(200, JSON_TYPE).end(JSON.stringify(doc(id))))
  t.equal((await resolver.resolve(id)).clientId, id)

  const previous = getDefaultAutoSelectFamily()
  setDefaultAutoSelectFamily(false)
  t.teardown(() => setDefaultAutoSelectFamily(previous))
  const { resolver: single, lookups } = makeResolver(t)
  const other = serve('single-address', id => doc(id))
  t.equal((await single.resolve(other)).clientId, other)
  t.strictSame(lookups, ['client.test'])
})

t.test('URL rules are checked before any lookup or connection', async t => {
  const { resolver, lookups } = makeResolver(t)
  const before = connections
  const cases: Array<[string, RegExp]> = [
    [`http://client.test:${plainPort}/client.json`, /must use https/],
    ['client.json', /must use https/],
    ['', /must be a URL/],
    [`https://client.test:${port}`, /must have a path/],
    [`https://client.test:${port}/`, /must have a path/],
    [`https://client.test:${port}?x=1`, /must have a path/],
    [`https://client.test:${port}/a/./client.json`, /path segments/],
    [`https://client.test:${port}/a/../client.json`, /path segments/],
    [`https://client.test:${port}/a/.`, /path segments/],
    [`https://client.test:${port}/a/..`, /path segments/],
    [`https://client.test:${port}/a/%2e%2e/client.json`, /path segments/],
    [`https://client.test:${port}/a/%2E/client.json`, /path segments/],
    [`https://client.test:${port}/a/.%2e/client.json`, /path segments/],
    [`https://client.test:${port}/client.json#frag`, /fragment/],
    [`https://client.test:${port}/client.json#`, /fragment/],
    [`https://user:pass@client.test:${port}/client.json`, /user information/],
    [`https://user@client.test:${port}/client.json`, /user information/],
    [`https://CLIENT.test:${port}/client.json`, /canonical form/],
    [`HTTPS://client.test:${port}/client.json`, /canonical form/],
    ['https://client.test:443/client.json', /canonical form/],
    [`https://client.test:${port}/a\\b.json`, /backslashes/],
    [`https://client.test:${port}/a b.json`, /spaces/],
    [`https://client.test:${port}/caf\u00e9.json`, /non-ASCII/],
    [`https://client.test:${port}/` + 'a'.repeat(2100), /longer than/],
    ['https://bad%host/client.json', /not a valid URL/],
    ['https://[::1/client.json', /not a valid URL/]
  ]
  for (const [id, pattern] of cases) {
    await t.rejects(resolver.resolve(id), refusal(pattern), JSON.stringify(id))
  }
  t.strictSame(lookups, [], 'nothing was resolved')
  await sleep(20)
  t.equal(connections, before, 'nothing was fetched')
  t.equal(plainConnections, 0, 'the http server was never contacted')
})

t.test('private and special-use addresses are refused without connecting', async t => {
  const id = serve('private', id => doc(id))
  const cases: ResolvedAddress[][] = [
    [{ address: '10.0.0.1', family: 4 }],
    [{ address: '127.0.0.1', family: 4 }],
    [{ address: '169.254.169.254', family: 4 }],
    [{ address: '100.64.0.1', family: 4 }],
    [{ address: '0.0.0.0', family: 4 }],
    [{ address: '::1', family: 6 }],
    [{ address: '0:0:0:0:0:0:0:1', family: 6 }],
    [{ address: '::', family: 6 }],
    [{ address: 'fe80::1', family: 6 }],
    [{ address: 'fe80::1%lo', family: 6 }],
    [{ address: 'fd00::1', family: 6 }],
    [{ address: '::ffff:127.0.0.1', family: 6 }],
    [{ address: '::ffff:7f00:1', family: 6 }],
    [{ address: '0:0:0:0:0:ffff:a00:1', family: 6 }],
    [{ address: '::127.0.0.1', family: 6 }],
    [{ address: '64:ff9b::a00:1', family: 6 }],
    [{ address: '2001:0db8::1', family: 6 }],
    [{ address: '93.184.215.14', family: 4 }, { address: '10.0.0.1', family: 4 }]
  ]
  const before = connections
  for (const addresses of cases) {
    const { resolver, lookups } = makeResolver(t, { allowPrivateAddresses: false, lookup: async host => { lookups.push(host); return addresses } })
    await t.rejects(resolver.resolve(id), refusal(/private, loopback, link-local or special-use/), addresses.map(a => a.address).join(', '))
    t.equal(lookups.length, 1)
  }
  const { resolver, lookups } = makeResolver(t, { allowPrivateAddresses: false })
  await t.rejects(resolver.resolve(`https://127.0.0.1:${port}/client.json`), refusal(/special-use address/), 'an IP literal')
  await t.rejects(resolver.resolve(`https://[::1]:${port}/client.json`), refusal(/special-use address/), 'an IPv6 literal')
  await t.rejects(resolver.resolve(`https://localhost:${port}/client.json`), refusal(/local or special-use/), 'a local name')
  await t.rejects(resolver.resolve(`https://metadata.internal:${port}/client.json`), refusal(/local or special-use/), 'an internal name')
  t.strictSame(lookups, [], 'local names and literals are not looked up')
  const { resolver: empty } = makeResolver(t, { allowPrivateAddresses: false, lookup: async () => [] })
  await t.rejects(empty.resolve(id), refusal(/has no address/))
  const { resolver: bogus } = makeResolver(t, { lookup: async () => [{ address: 'not-an-ip', family: 4 }] })
  await t.rejects(bogus.resolve(id), refusal(/not an IP address/))
  const { resolver: broken } = makeResolver(t, { lookup: async () => { throw Object.assign(new Error('queryA ENOTFOUND'), { code: 'ENOTFOUND' }) } })
  await t.rejects(broken.resolve(id), refusal(/could not be resolved/))
  await sleep(20)
  t.equal(connections, before, 'no connection was made')
  t.equal(hitsOf(id), 0)
})

t.test('address classification', async t => {
  const forbidden = [
    '0.0.0.0', '10.1.2.3', '127.0.0.1', '169.254.169.254', '172.16.0.1', '192.168.1.1', '100.64.0.1', '224.0.0.1', '255.255.255.255',
    '::', '::1', '0:0:0:0:0:0:0:1', '::127.0.0.1', '::ffff:10.0.0.1', '::ffff:a00:1', '0:0:0:0:0:ffff:7f00:1', '::ffff:0:8.8.8.8',
    '1::', '100::1', '64:ff9b::808:808', '0064:ff9b:0000::1', '2001::1', '2001:10::1', '2001:0db8::1', '3fff::1', '2002:808:808::1',
    'fc00::1', 'fd12:3456::1', 'fe80::1', 'fe80::1%eth0', 'fec0::1', 'ff02::1', 'not-an-ip', ''
  ]
  const allowed = ['8.8.8.8', '93.184.215.14', '2606:4700:4700::1111', '2001:4860:4860::8888', '::ffff:8.8.8.8', '0:0:0:0:0:ffff:808:808', '2a00:1450:4001:81c::200e']
  for (const address of forbidden) t.ok(isForbiddenAddress(address), `${address} is refused`)
  for (const address of allowed) t.notOk(isForbiddenAddress(address), `${address} is allowed`)
})

t.test('redirects are not followed; only 200 counts', async t => {
  const { resolver } = makeResolver(t)
  const target = serve('target', id => doc(id))
  for (const status of [301, 302, 303, 307, 308]) {
    const id = route('redirect', (_req, res) => res.writeHead(status, { location: target }).end())
    await t.rejects(resolver.resolve(id), refusal(/redirect \(HTTP \d+\); redirects are not followed/), `HTTP ${status}`)
  }
  t.equal(hitsOf(target), 0, 'the redirect target was never fetched')
  for (const status of [204, 404, 500]) {
    const id = route('status', (_req, res) => res.writeHead(status, JSON_TYPE).end())
    await t.rejects(resolver.resolve(id), refusal(new RegExp(`HTTP ${status}; 200 is required`)))
  }
})

t.test('content type must be application/json in UTF-8, not encoded', async t => {
  const { resolver } = makeResolver(t)
  const refused: Array<[Record<string, string>, RegExp]> = [
    [{ 'content-type': 'text/html' }, /must be application\/json/],
    [{ 'content-type': 'text/plain; charset=utf-8' }, /must be application\/json/],
    [{ 'content-type': 'application/jrd+json' }, /must be application\/json/],
    [{}, /no Content-Type/],
    [{ 'content-type': 'application/json; charset=iso-8859-1' }, /UTF-8/],
    [{ 'content-type': 'application/json', 'content-encoding': 'gzip' }, /content-encoded/]
  ]
  for (const [headers, pattern] of refused) {
    const id = serve('type', id => doc(id), headers)
    await t.rejects(resolver.resolve(id), refusal(pattern), JSON.stringify(headers))
  }
  for (const type of ['application/json; charset=UTF-8', 'Application/JSON', 'application/json;charset="utf-8"', 'application/json; profile']) {
    const id = serve('type-ok', id => doc(id), { 'content-type': type })
    t.equal((await resolver.resolve(id)).clientId, id, type)
  }
})

t.test('the size cap holds whatever the server says about length', async t => {
  const maxBytes = 5120
  const { resolver } = makeResolver(t, { timeoutMs: 4000 })
  const sized = (id: string, size: number): string => {
    const base = JSON.stringify(doc(id, { pad: '' }))
    return JSON.stringify(doc(id, { pad: 'x'.repeat(size - base.length) }))
  }
  const exact = serve('exact', id => sized(id, maxBytes))
  t.equal((await resolver.resolve(exact)).clientId, exact, 'exactly maxBytes is accepted')

  const big = route('big', (req, res) => {
    const body = sized(`https://${req.headers.host ?? ''}${req.url ?? ''}`, 6 * 1024)
    res.writeHead(200, { ...JSON_TYPE, 'content-length': String(body.length) }).end(body)
  })
  await t.rejects(resolver.resolve(big), refusal(/larger than 5120 bytes/), 'declared Content-Length')

  const oneOver = route('chunked', (req, res) => {
    const body = sized(`https://${req.headers.host ?? ''}${req.url ?? ''}`, maxBytes + 1)
    res.writeHead(200, JSON_TYPE)
    res.write(body.slice(0, 3000))
    res.end(body.slice(3000))
  })
  await t.rejects(resolver.resolve(oneOver), refusal(/larger than 5120 bytes/), 'chunked, one byte over')

  const closeDelimited = route('close-delimited', (req, res) => {
    const body = sized(`https://${req.headers.host ?? ''}${req.url ?? ''}`, 6 * 1024)
    res.socket?.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n' + body)
  })
  await t.rejects(resolver.resolve(closeDelimited), refusal(/larger than 5120 bytes/), 'no Content-Length, body until close')

  const lying = route('lying', (req, res) => {
    const body = sized(`https://${req.headers.host ?? ''}${req.url ?? ''}`, 6 * 1024)
    res.socket?.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n' + body)
  })
  await t.rejects(resolver.resolve(lying), refusal(/not valid JSON|could not be fetched/), 'a small Content-Length never admits more bytes')

  let streamClosed = false
  const endless = route('endless', (_req, res) => {
    res.writeHead(200, JSON_TYPE)
    const timer = setInterval(() => res.write(Buffer.alloc(1024, 0x20)), 2)
    res.on('close', () => {
      clearInterval(timer)
      streamClosed = true
    })
  })
  const started = Date.now()
  await t.rejects(resolver.resolve(endless), refusal(/larger than 5120 bytes/), 'an endless stream')
  t.ok(Date.now() - started < 2000, 'refused at the cap, not at the deadline')
  await until(() => streamClosed)
  t.ok(streamClosed, 'the connection was torn down')
})

t.test('one deadline covers DNS, headers and body', async t => {
  const timeoutMs = 300
  const { resolver } = makeResolver(t, { timeoutMs })
  const check = async (id: string, what: string, r = resolver): Promise<void> => {
    const started = Date.now()
    await t.rejects(r.resolve(id), refusal(/no complete answer within 300 ms/), what)
    const elapsed = Date.now() - started
    t.ok(elapsed >= timeoutMs - 20 && elapsed < timeoutMs + 1500, `${what}: gave up after ${elapsed} ms`)
  }
  await check(route('no-headers', () => {}), 'headers never come')
  await check(route('stalled-body', (_req, res) => {
    res.writeHead(200, JSON_TYPE)
    res.write('{"client_id":')
  }), 'body never finishes')
  const { resolver: slowDns } = makeResolver(t, { timeoutMs, lookup: () => new Promise<ResolvedAddress[]>(() => {}) })
  await check(serve('slow-dns', id => doc(id)), 'DNS never answers', slowDns)
})

t.test('the document must describe this client, publicly', async t => {
  const { resolver } = makeResolver(t)
  const cases: Array<[string, (id: string) => unknown, RegExp]> = [
    ['not json', () => 'not json {', /not valid JSON/],
    ['invalid utf-8', () => Buffer.from([0x7b, 0xff, 0x7d]), /not valid UTF-8/],
    ['an array', () => [], /must be a JSON object/],
    ['null', () => 'null', /must be a JSON object/],
    ['another client_id', () => doc('https://elsewhere.example/client.json'), /does not equal the URL/],
    ['no client_id', id => ({ ...doc(id), client_id: undefined }), /does not equal the URL/],
    ['client_secret', id => doc(id, { client_secret: 'shh' }), /must not contain a client_secret/],
    ['client_secret_basic', id => doc(id, { token_endpoint_auth_method: 'client_secret_basic' }), /"client_secret_basic" needs a shared secret/],
    ['client_secret_post', id => doc(id, { token_endpoint_auth_method: 'client_secret_post' }), /"client_secret_post" needs a shared secret/],
    ['client_secret_jwt', id => doc(id, { token_endpoint_auth_method: 'client_secret_jwt' }), /"client_secret_jwt" needs a shared secret/],
    ['private_key_jwt without keys', id => doc(id, { token_endpoint_auth_method: 'private_key_jwt' }), /"private_key_jwt" needs exactly one of jwks and jwks_uri/],
    ['tls_client_auth', id => doc(id, { token_endpoint_auth_method: 'tls_client_auth' }), /must be "none" or "private_key_jwt"/],
    ['no client_name', id => ({ ...doc(id), client_name: undefined }), /client_name is required/],
    ['blank client_name', id => doc(id, { client_name: '   ' }), /client_name is required/],
    ['numeric client_name', id => doc(id, { client_name: 42 }), /client_name is required/],
    ['no redirect_uris', id => ({ ...doc(id), redirect_uris: undefined }), /redirect_uris is required/],
    ['empty redirect_uris', id => doc(id, { redirect_uris: [] }), /must not be empty/],
    ['string redirect_uris', id => doc(id, { redirect_uris: 'https://app.example/cb' }), /array of strings/],
    ['numeric redirect uri', id => doc(id, { redirect_uris: [1] }), /array of strings/],
    ['javascript: redirect', id => doc(id, { redirect_uris: ['https://app.example/cb', 'javascript:alert(1)'] }), /redirect_uris\[1\] uses the forbidden scheme "javascript:"/],
    ['http redirect', id => doc(id, { redirect_uris: ['http://app.example/cb'] }), /https is required/],
    ['private redirect', id => doc(id, { redirect_uris: ['https://10.1.2.3/cb'] }), /private or special-use/],
    ['client_credentials', id => doc(id, { grant_types: ['client_credentials'] }), /grant_types may only contain/],
    ['refresh only', id => doc(id, { grant_types: ['refresh_token'] }), /must include authorization_code/],
    ['implicit', id => doc(id, { response_types: ['token'] }), /response_types may only contain code/],
    ['numeric scope', id => doc(id, { scope: 7 }), /scope must be a string/],
    ['javascript: logo', id => doc(id, { logo_uri: 'javascript:alert(1)' }), /logo_uri must be an https URL/],
    ['relative tos_uri', id => doc(id, { tos_uri: '/tos' }), /tos_uri must be an https URL/],
    ['http client_uri', id => doc(id, { client_uri: 'http://app.example/' }), /client_uri must be an https URL/],
    ['contacts', id => doc(id, { contacts: 'ops@app.example' }), /contacts must be an array of strings/],
    ['software_id', id => doc(id, { software_id: {} }), /software_id must be a string/]
  ]
  for (const [name, body, pattern] of cases) {
    const id = serve('content', body)
    await t.rejects(resolver.resolve(id), refusal(pattern), name)
  }
  const leaky = serve('leaky', () => 'SECRET-IN-BODY {')
  const err = await resolver.resolve(leaky).catch((e: unknown) => e)
  t.type(err, OAuthError)
  t.notMatch((err as OAuthError).message, /SECRET-IN-BODY/, 'the body is never quoted')
})

t.test('cached within its lifetime, fetched again after (injected clock)', async t => {
  let clock = 1_700_000_000_000
  const fetched: string[] = []
  const { resolver } = makeResolver(t, { now: () => clock, minCacheSeconds: 1, maxCacheSeconds: 3600, onFetched: id => fetched.push(id) })
  let name = 'First'
  const id = serve('changing', id => doc(id, { client_name: name }), { ...JSON_TYPE, 'cache-control': 'max-age=1' })
  t.equal((await resolver.resolve(id)).clientName, 'First')
  name = 'Second'
  clock += 500
  const cached = await resolver.resolve(id)
  t.equal(cached.clientName, 'First', 'within max-age the cached document is used')
  t.equal(cached.clientIdIssuedAt, 1_700_000_000, 'as fetched')
  t.equal(hitsOf(id), 1)
  clock += 600
  const fresh = await resolver.resolve(id)
  t.equal(fresh.clientName, 'Second', 'after max-age the document is fetched again')
  t.equal(fresh.clientIdIssuedAt, 1_700_000_001)
  t.equal(hitsOf(id), 2)
  t.same(fetched, [id, id], 'onFetched: once per fetch, not for cache hits')
})

t.test('cache lifetimes are clamped and follow the headers', async t => {
  const cases: Array<[string, Record<string, string>, number]> = [
    ['max-age above the ceiling', { 'cache-control': 'public, max-age=100000' }, 10],
    ['max-age below the floor', { 'cache-control': 'max-age=0' }, 2],
    ['no-store means the floor', { 'cache-control': 'no-store' }, 2],
    ['no-cache means the floor', { 'cache-control': 'no-cache' }, 2],
    ['no header means the floor', {}, 2],
    ['invalid max-age means the floor', { 'cache-control': 'max-age=soon' }, 2],
    ['Age is subtracted', { 'cache-control': 'max-age=8', age: '3' }, 5],
    ['Expires relative to Date', { date: 'Tue, 14 Nov 2023 22:13:20 GMT', expires: 'Tue, 14 Nov 2023 22:13:26 GMT' }, 6],
    ['the first of repeated directives counts', { 'cache-control': 'max-age=7, , max-age=100' }, 7]
  ]
  for (const [name, headers, seconds] of cases) {
    let clock = 1_700_000_000_000
    const { resolver } = makeResolver(t, { now: () => clock, minCacheSeconds: 2, maxCacheSeconds: 10 })
    const id = serve('ttl', id => doc(id), { ...JSON_TYPE, ...headers })
    await resolver.resolve(id)
    clock += seconds * 1000 - 1
    await resolver.resolve(id)
    t.equal(hitsOf(id), 1, `${name}: cached for ${seconds} s`)
    clock += 1
    await resolver.resolve(id)
    t.equal(hitsOf(id), 2, `${name}: fetched again after ${seconds} s`)
  }
})

t.test('failures are remembered for failureCacheSeconds, then fetched again', async t => {
  let clock = 1_700_000_000_000
  const { resolver } = makeResolver(t, { now: () => clock, failureCacheSeconds: 30 })
  let calls = 0
  const id = route('flaky', (req, res) => {
    if (++calls === 1) {
      res.writeHead(500).end()
      return
    }
    res.writeHead(200, JSON_TYPE).end(JSON.stringify(doc(`https://${req.headers.host ?? ''}${req.url ?? ''}`)))
  })
  await t.rejects(resolver.resolve(id), refusal(/HTTP 500/))
  await t.rejects(resolver.resolve(id), refusal(/HTTP 500/), 'the same answer within the window')
  t.equal(calls, 1, 'without fetching again')
  clock += 30_000
  t.equal((await resolver.resolve(id)).clientId, id, 'after the window the next call fetches again and succeeds')
  t.equal(calls, 2)

  const { resolver: forgetful } = makeResolver(t, { failureCacheSeconds: 0 })
  calls = 0
  await t.rejects(forgetful.resolve(id), refusal(/HTTP 500/))
  t.equal((await forgetful.resolve(id)).clientId, id, 'failureCacheSeconds 0: nothing remembered')
  t.equal(calls, 2)
})

t.test('remembered failures are bounded', async t => {
  const { resolver } = makeResolver(t, { maxCacheEntries: 2 })
  const [a, b, c] = ['fail-a', 'fail-b', 'fail-c'].map(name => route(name, (_req, res) => res.writeHead(404).end())) as [string, string, string]
  for (const id of [a, b, c]) await t.rejects(resolver.resolve(id), refusal(/HTTP 404/))
  for (const id of [c, b, a]) await t.rejects(resolver.resolve(id), refusal(/HTTP 404/))
  t.same([hitsOf(a), hitsOf(b), hitsOf(c)], [2, 1, 1], 'the oldest failure was forgotten, the two newest kept')
})

t.test('at most maxConcurrentFetches fetches at once; one more is refused at once, 503 with Retry-After', async t => {
  const { resolver } = makeResolver(t, { maxConcurrentFetches: 2, timeoutMs: 10_000 })
  const waiting: Array<() => void> = []
  const slow = (name: string) => route(name, (req, res) => {
    waiting.push(() => res.writeHead(200, JSON_TYPE).end(JSON.stringify(doc(`https://${req.headers.host ?? ''}${req.url ?? ''}`))))
  })
  const [a, b, c] = [slow('cap-a'), slow('cap-b'), slow('cap-c')]
  const pending = [resolver.resolve(a), resolver.resolve(b), resolver.resolve(a)]
  await until(() => waiting.length === 2)
  const err = await resolver.resolve(c).catch((e: unknown) => e)
  t.match(err, { name: 'OAuthError', error: 'temporarily_unavailable', statusCode: 503, headers: { 'retry-after': /^\d+$/ } })
  t.equal(hitsOf(c), 0, 'nothing was fetched for it')
  for (const answer of waiting) answer()
  const records = await Promise.all(pending)
  t.same(records.map(r => r.clientId), [a, b, a], 'a second caller of a document in flight joins its fetch')
  waiting.length = 0
  const third = resolver.resolve(c)
  await until(() => waiting.length === 1)
  for (const answer of waiting) answer()
  t.equal((await third).clientId, c, 'slots free again once fetches end')
})

t.test('concurrent resolves share one fetch', async t => {
  const { resolver, lookups } = makeResolver(t)
  const id = route('concurrent', (req, res) => {
    setTimeout(() => res.writeHead(200, JSON_TYPE).end(JSON.stringify(doc(`https://${req.headers.host ?? ''}${req.url ?? ''}`))), 100)
  })
  const records = await Promise.all(Array.from({ length: 8 }, () => resolver.resolve(id)))
  t.equal(hitsOf(id), 1, 'one request reached the server')
  t.equal(lookups.length, 1, 'one lookup')
  for (const record of records) t.strictSame(record, records[0])
  t.not(records[0], records[1], 'each caller gets its own copy')
  records[0]?.redirectUris.push('https://evil.example/cb')
  t.strictSame((await resolver.resolve(id)).redirectUris, ['https://app.example/callback'], 'a caller cannot alter the cache')
  t.equal(hitsOf(id), 1)
})

t.test('the cache is bounded', async t => {
  const { resolver } = makeResolver(t, { maxCacheEntries: 2 })
  const [a, b, c] = ['lru-a', 'lru-b', 'lru-c'].map(name => serve(name, id => doc(id))) as [string, string, string]
  await resolver.resolve(a)
  await resolver.resolve(b)
  await resolver.resolve(a) // a is now the most recently used
  await resolver.resolve(c) // evicts b
  t.equal(hitsOf(a), 1)
  await resolver.resolve(b)
  t.equal(hitsOf(b), 2, 'the least recently used entry was evicted')
  await resolver.resolve(c)
  t.equal(hitsOf(c), 1, 'recent entries stay')
})

t.test('close() aborts fetches in flight and refuses later calls', async t => {
  const { resolver } = makeResolver(t, { timeoutMs: 5000 })
  let requestClosed = false
  const id = route('hang', req => { req.on('close', () => { requestClosed = true }) })
  const cachedId = serve('cached', id => doc(id))
  await resolver.resolve(cachedId)
  const pending = resolver.resolve(id)
  await until(() => hitsOf(id) > 0)
  const started = Date.now()
  resolver.close()
  await t.rejects(pending, refusal(/resolver was closed/))
  t.ok(Date.now() - started < 1000, 'promptly')
  await t.rejects(resolver.resolve(cachedId), refusal(/resolver is closed/), 'the cache is gone too')
  await until(() => requestClosed)
  t.ok(requestClosed, 'the connection was closed')
})
