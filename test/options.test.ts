import t from 'tap'
import Fastify from 'fastify'
import { generateKey, mcpOAuth, MemoryStore } from '../lib/index.js'
import { resolveOptions } from '../lib/options/index.js'

const base = { issuer: 'https://as.example.com', resources: ['https://as.example.com/mcp'] }

async function register (opts: unknown, prefix?: string) {
  const app = Fastify()
  try {
    if (prefix === undefined) await app.register(mcpOAuth, opts as never)
    else await app.register(async (s) => { await s.register(mcpOAuth, opts as never) }, { prefix })
    await app.ready()
    return app
  } finally {
    await app.close()
  }
}

t.test('option validation names the bad field', async t => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['no options (fastify passes {})', null, /option issuer: is required/],
    ['issuer missing', { resources: base.resources }, /option issuer: is required/],
    ['issuer not a URL', { ...base, issuer: 'as.example.com' }, /option issuer: "as.example.com" is not an absolute URL/],
    ['issuer with query', { ...base, issuer: 'https://as.example.com?x=1' }, /option issuer: must not have a query/],
    ['issuer with fragment', { ...base, issuer: 'https://as.example.com#x' }, /option issuer: must not have a fragment/],
    ['issuer with trailing slash', { ...base, issuer: 'https://as.example.com/' }, /option issuer: must not end with "\/"/],
    ['issuer not canonical', { ...base, issuer: 'HTTPS://AS.example.com', resources: ['https://as.example.com/mcp'] }, /option issuer: must be written in canonical form/],
    ['issuer ftp', { ...base, issuer: 'ftp://as.example.com' }, /option issuer: .*must be an http\(s\) URL/],
    ['issuer with userinfo', { ...base, issuer: 'https://u:p@as.example.com' }, /option issuer: must not contain user information/],
    ['resources empty', { ...base, resources: [] }, /option resources: /],
    ['resource not a URL', { ...base, resources: ['/mcp'] }, /option resources\[0\]: /],
    ['resource with fragment', { ...base, resources: ['https://as.example.com/mcp#x'] }, /option resources\[0\]: .*fragment/],
    ['resource with query', { ...base, resources: ['https://as.example.com/mcp?x'] }, /option resources\[0\]: .*query/],
    ['duplicate resources', { ...base, resources: ['https://as.example.com/mcp', 'https://AS.example.com/mcp'] }, /option resources\[1\]: duplicate/],
    ['unknown option', { ...base, isuer: 'x' }, /option isuer: must not have additional properties/],
    ['unknown nested option', { ...base, ttl: { acessToken: 5 } }, /option ttl\.acessToken: /],
    ['ttl not positive', { ...base, ttl: { accessToken: 0 } }, /option ttl\.accessToken: must be >= 1/],
    ['ttl not an integer', { ...base, ttl: { code: 1.5 } }, /option ttl\.code: must be integer/],
    ['refresh longer than grant', { ...base, ttl: { refreshToken: 100, grant: 50 } }, /option ttl\.refreshToken: must not be longer than ttl\.grant/],
    ['bad scope token', { ...base, scopes: ['has space'] }, /option scopes\[0\]: /],
    ['default scope not supported', { ...base, scopes: ['a'], defaultScopes: ['b'] }, /option defaultScopes: "b" is not in scopes/],
    ['resource scope not supported', { ...base, scopes: ['a'], resources: [{ resource: 'https://as.example.com/mcp', scopes: ['b'] }] }, /option resources\[0\]\.scopes: "b"/],
    ['store without methods', { ...base, store: { getGrant () {} } }, /option store: does not implement saveGrant/],
    ['store not an object', { ...base, store: 42 }, /option store: must be an object/],
    ['now not a function', { ...base, now: 5 }, /option now: must be a function/]
  ]
  for (const [name, opts, message] of cases) {
    await t.rejects(register(opts), { code: 'FST_MCP_OAUTH_INVALID_OPTION', message }, name)
  }
})

t.test('start-up consistency: refuse what would serve metadata at the wrong place', async t => {
  await t.rejects(register({ ...base, resources: ['https://other.example.com/mcp'] }),
    { code: 'FST_MCP_OAUTH_INCONSISTENT_CONFIG', message: /not on the issuer's origin/ })
  await t.rejects(register(base, '/api'),
    { code: 'FST_MCP_OAUTH_INCONSISTENT_CONFIG', message: /registered under the prefix "\/api"/ })
})

t.test('weakened settings are logged at start-up', async t => {
  const lines: Array<Record<string, unknown>> = []
  const stream = { write (s: string) { lines.push(JSON.parse(s)) } }
  const app = Fastify({ logger: { level: 'warn', stream } })
  t.teardown(() => app.close())
  await app.register(mcpOAuth, { issuer: 'http://mcp.example.com', resources: ['http://mcp.example.com/mcp'], ttl: { code: 900 } })
  await app.ready()
  const warnings = lines.filter(l => l.event === 'config_weakened').map(l => String(l.msg))
  t.match(warnings, [/plain http on a non-loopback host/, /ttl\.code is 900 s/])
})

t.test('http on loopback is fine; a store passed in is used and closed with the app', async t => {
  const store = new MemoryStore()
  let closed = false
  const close = store.close.bind(store)
  store.close = async () => { closed = true; await close() }
  const app = Fastify()
  await app.register(mcpOAuth, {
    issuer: 'http://127.0.0.1:3000',
    resources: ['http://127.0.0.1:3000/mcp'],
    store,
    cookieSecret: 'a'.repeat(32),
    encryption: { keys: [{ id: 'k1', key: generateKey() }] }
  })
  await app.ready()
  t.equal(app.mcpOAuth.storage, store)
  t.equal(app.mcpOAuth.config.issuer, 'http://127.0.0.1:3000')
  t.same(app.mcpOAuth.config.warnings, ['no identity provider configured: the authorization endpoint cannot log anyone in'], 'nothing about http on loopback')
  await app.close()
  t.ok(closed)
})

t.test('resolveOptions: the schema\'s defaults filled in on a copy, the warnings in table order', async t => {
  const given = { ...base, ttl: { code: 30 }, rateLimit: { token: { max: 5, windowSeconds: 10 } } }
  const before = JSON.stringify(given)
  const config = resolveOptions(given)
  t.equal(JSON.stringify(given), before, 'the caller\'s options are not written to')
  t.same(config.ttl, { accessToken: 3600, refreshToken: 30 * 86400, grant: 90 * 86400, code: 30, flow: 600 })
  t.same(config.rateLimits.token, { max: 5, windowSeconds: 10 })
  t.same(config.rateLimits.mcp, { max: 600, windowSeconds: 60 })
  t.same(config.registration, { mode: 'off', allowPublicClients: true, trustedSchemes: [], maxClientsPerIp: 0, unusedClientTtlSeconds: 30 * 86400 })
  t.same(config.scopes, ['mcp:tools'])
  t.same(config.defaultScopes, ['mcp:tools'])
  t.equal(config.cors, null)
  t.same(config.telemetry, { metrics: null, tracing: {} })
  t.not(resolveOptions(base).redirects.customSchemes, config.redirects.customSchemes, 'a default is a fresh copy each time')

  const weakened = resolveOptions({
    ...base,
    issuer: 'http://as.example.com',
    resources: ['http://as.example.com/mcp'],
    pkce: { required: false, allowPlain: true },
    refreshGraceSeconds: 0,
    upstreamRecheckSeconds: 90000,
    clients: [{ client_id: 'c', redirect_uris: ['http://127.0.0.1/cb'], refresh_grace_seconds: 900 }],
    metrics: { enabled: true },
    provider: { name: 'p', authorizationUrl () {}, exchangeCode () {}, refresh () {} }
  })
  t.match(weakened.warnings, [
    /^issuer http:\/\/as\.example\.com is plain http/,
    /^pkce\.allowPlain is on/,
    /^pkce\.required is off/,
    /^refreshGraceSeconds is 0/,
    /^upstreamRecheckSeconds is 90000: /,
    /^no encryption key/,
    /^no secret/,
    /^clients\[0\]\.refresh_grace_seconds is 900: .* of c stays usable/,
    /^metrics\.token is not set: \/metrics is readable/
  ])
  t.equal(weakened.warnings.length, 9, 'a provider given: no warning about it')
})
