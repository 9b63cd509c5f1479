import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildProduction, parseKeys, readSecret } from '../example/production/app.js'
import { startDevIdp } from '../example/dev-idp.js'
import { generateKey } from '../lib/index.js'
import { redisServerAvailable, startRedisServer } from './helpers/redis.js'

t.test('secrets come from files only', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'prod-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 's'), '  value-from-file\n')
  writeFileSync(join(dir, 'empty'), '\n')
  t.equal(readSecret({ X_FILE: join(dir, 's') }, 'X'), 'value-from-file')
  t.throws(() => readSecret({ X: 'literal' }, 'X'), /must not be set directly/)
  t.throws(() => readSecret({}, 'X'), /X_FILE is required/)
  t.equal(readSecret({}, 'X', false), undefined)
  t.throws(() => readSecret({ X_FILE: join(dir, 'empty') }, 'X'), /is empty/)
  t.same(parseKeys('# old first\nk1 abc\nk2:def\n'), [{ id: 'k1', key: 'abc' }, { id: 'k2', key: 'def' }])
})

t.test('the production example starts with every protection on', { skip: !redisServerAvailable() && !process.env.CI ? 'redis-server not installed' : false }, async t => {
  const redis = await startRedisServer()
  t.teardown(() => redis.destroy())
  const issuer = 'https://mcp.example.com'
  const idp = await startDevIdp({ clients: [{ client_id: 'mcp', client_secret: 'upstream-secret-upstream-secret', redirect_uris: [`${issuer}/oauth/callback`] }] })
  t.teardown(() => idp.close())
  const dir = mkdtempSync(join(tmpdir(), 'prod-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string, value: string) => { writeFileSync(join(dir, name), value); return join(dir, name) }
  const env = {
    NODE_ENV: 'production',
    LOG_LEVEL: 'silent',
    MCP_OAUTH_ISSUER: issuer,
    REDIS_URL: redis.url,
    TRUST_PROXY: '1',
    OIDC_ISSUER: idp.issuer,
    OIDC_CLIENT_ID: 'mcp',
    OIDC_ALLOW_HTTP: 'true',
    OIDC_CLIENT_SECRET_FILE: file('oidc', 'upstream-secret-upstream-secret'),
    ENCRYPTION_KEYS_FILE: file('keys', `2026-01 ${generateKey()}\n2026-11 ${generateKey()}\n`),
    COOKIE_SECRET_FILE: file('cookie', 'c'.repeat(48)),
    REGISTRATION_TOKEN_FILE: file('registration', 'r'.repeat(48))
  }
  await t.rejects(buildProduction({ ...env, NODE_ENV: 'development' }), /NODE_ENV=production/)
  await t.rejects(buildProduction({ ...env, COOKIE_SECRET_FILE: undefined }), /COOKIE_SECRET_FILE is required/)
  const app = await buildProduction(env)
  t.teardown(() => app.close())
  const config = app.mcpOAuth.config
  t.equal(config.registration.mode, 'token')
  t.equal(config.encryptionKeys.length, 2)
  t.ok(config.rateLimits.enabled)
  t.same(config.warnings, [], 'nothing weakened')
  const reg = await app.inject({ method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['https://a.example.com/cb'] } })
  t.equal(reg.statusCode, 401, 'registration needs the token')
  const ok = await app.inject({ method: 'POST', url: '/oauth/register', headers: { authorization: `Bearer ${'r'.repeat(48)}` }, payload: { redirect_uris: ['https://a.example.com/cb'] } })
  t.equal(ok.statusCode, 201)
  const viaProxy = await app.inject({ url: '/healthz', headers: { 'x-forwarded-for': '198.51.100.9' } })
  t.equal(viaProxy.statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/mcp' })).statusCode, 401)
  t.equal((await app.inject('/.well-known/oauth-authorization-server')).headers['strict-transport-security'], 'max-age=31536000')
})
