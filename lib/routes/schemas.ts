import Type from 'typebox'

/**
 * A signed assertion as a body parameter (a client assertion, an ID-JAG). The schema sets no length:
 * one longer than the engine's limit (MAX_ASSERTION_LENGTH, lib/oauth/jwt.ts) goes to the engine,
 * which refuses it with the error of its kind (invalid_client, invalid_grant) and the reason, as it
 * does any other bad assertion; the endpoints' body limit (64 KiB) bounds it before parsing. A
 * `maxLength` would also walk every character of every assertion to count code points: about 3 µs
 * for an ID-JAG.
 */
export const AssertionParam = Type.String()

/** RFC 7521 §4.2: the client assertion parameters of the token, revocation and introspection bodies. */
export const ClientAssertionParams = {
  client_assertion: Type.Optional(AssertionParam),
  client_assertion_type: Type.Optional(Type.String({ maxLength: 200 }))
}

/**
 * RFC 6749 §5.2: the body of every JSON error of the OAuth scope. The scope puts it on each route's
 * 4xx and 5xx responses (unless the route declares its own), so one schema documents and serialises them.
 */
export const OAuthErrorResponse = Type.Object({
  error: Type.String(),
  error_description: Type.Optional(Type.String())
})
