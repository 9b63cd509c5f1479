import t from 'tap'
import { errors, OAuthError } from '../lib/errors.js'
import { githubProvider, googleProvider, oidcProvider } from '../lib/providers/index.js'
import { KeyRing } from '../lib/security/keyring.js'

t.test('the errors table: one code per row, all in the plugin\'s namespace', async t => {
  const codes = Object.values(errors).map(E => new E('a', 'b').code)
  t.same([...new Set(codes)], codes, 'no code twice')
  for (const code of codes) t.match(code, /^FST_MCP_OAUTH_[A-Z_]+$/)
})

t.test('misconfigured providers throw TypeErrors with a code and the message naming the provider', async t => {
  t.throws(() => oidcProvider({ issuer: 'https://idp.example', clientId: '' }),
    { code: 'FST_MCP_OAUTH_PROVIDER_OPTION', message: 'oidc: clientId is required' })
  t.throws(() => oidcProvider({ issuer: 'not a url', clientId: 'x' }), { code: 'FST_MCP_OAUTH_PROVIDER_URL', message: 'oidc: issuer is not a valid URL' })
  t.throws(() => githubProvider({ clientId: 'c', clientSecret: 's', baseUrl: 'http://ghe.example' }), { code: 'FST_MCP_OAUTH_PROVIDER_INSECURE_URL' })
  t.throws(() => googleProvider({ name: 'g', clientId: 'x', clientSecret: 'y', hostedDomain: ' ' }), { message: 'g: hostedDomain cannot be empty' })
  let thrown: unknown
  try {
    oidcProvider({ issuer: 'https://idp.example', clientId: 'x', timeoutMs: 0 })
  } catch (err) {
    thrown = err
  }
  t.ok(thrown instanceof TypeError, 'still a TypeError')
})

t.test('key ring errors keep their messages', async t => {
  t.throws(() => new KeyRing([{ id: 'a', key: 'short' }]), { code: 'FST_MCP_OAUTH_ENCRYPTION_KEY', message: /^key "a" must be 32 bytes/ })
  t.throws(() => new KeyRing().open('e1.x.y.z.w.v', 'ctx'), { code: 'FST_MCP_OAUTH_SEALED_VALUE', message: 'malformed ciphertext' })
})

t.test('an OAuth error is redirectable exactly when it carries its redirect', async t => {
  t.equal(new OAuthError('invalid_client', 'unknown').redirectable, false)
  const err = new OAuthError('invalid_scope', 'no', { redirect: 'https://app.example.com/cb?error=invalid_scope' })
  t.equal(err.redirectable, true)
  t.equal(err.redirect, 'https://app.example.com/cb?error=invalid_scope')
})
