import t from 'tap'
import { generateToken, hashToken, looksLike, matchesHash, safeEqual, TOKEN_PREFIX, generateId } from '../lib/oauth/tokens.js'

t.test('tokens: prefix, 256 random bits, base64url, unique', async t => {
  const seen = new Set<string>()
  for (const kind of Object.keys(TOKEN_PREFIX) as Array<keyof typeof TOKEN_PREFIX>) {
    const token = generateToken(kind)
    t.ok(token.startsWith(TOKEN_PREFIX[kind]))
    const body = token.slice(TOKEN_PREFIX[kind].length)
    t.match(body, /^[A-Za-z0-9_-]{43}$/)
    t.equal(Buffer.from(body, 'base64url').length, 32, '256 bits')
    t.ok(looksLike(kind, token))
    seen.add(token)
  }
  for (let i = 0; i < 1000; i++) seen.add(generateToken('accessToken'))
  t.equal(seen.size, 1000 + Object.keys(TOKEN_PREFIX).length)
  t.notOk(looksLike('accessToken', generateToken('refreshToken')), 'kind is checked')
  t.notOk(looksLike('accessToken', TOKEN_PREFIX.accessToken + '!'.repeat(43)))
  t.notOk(looksLike('accessToken', ''))
  t.match(generateId(), /^[A-Za-z0-9_-]{22}$/)
})

t.test('hash: SHA-256 base64url, deterministic, never the token', async t => {
  const token = generateToken('accessToken')
  t.equal(hashToken(token), hashToken(token))
  t.match(hashToken(token), /^[A-Za-z0-9_-]{43}$/)
  t.not(hashToken(token), token)
  t.equal(hashToken('abc'), 'ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0')
})

t.test('matchesHash: a secret against the stored form of a secret (hashToken)', async t => {
  const secret = generateToken('clientSecret')
  t.ok(matchesHash(secret, hashToken(secret)))
  t.notOk(matchesHash(secret + 'x', hashToken(secret)), 'another secret')
  t.notOk(matchesHash('', hashToken(secret)), 'an empty secret')
  t.notOk(matchesHash(secret, hashToken(secret).slice(0, -2)), 'a stored hash of another length (damaged) never matches')
  t.notOk(matchesHash(secret, ''), 'nor an empty one')
  t.notOk(matchesHash(secret, hashToken(secret).toUpperCase()), 'the hash is compared as bytes, not case-folded')
})

t.test('safeEqual', async t => {
  t.ok(safeEqual('secret', 'secret'))
  t.notOk(safeEqual('secret', 'secreT'))
  t.notOk(safeEqual('secret', 'secret-longer'))
  t.notOk(safeEqual('', 'x'))
})
