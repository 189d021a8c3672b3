// An OpenID provider on loopback for the chat's --oidc-issuer test (tests/chat.rs), built on
// the OpenID-certified `oidc-provider` package. It issues JWT access tokens (RFC 9068) with
// the client credentials grant and a resource indicator (RFC 8707): the resource chooses
// the signing algorithm (RS256, ES256, EdDSA) and the audience.
//
// Started by the test harness: `node provider.mjs`. It prints `listening <issuer>` once it
// serves, then reads commands from stdin, one per line, and answers each with one line:
//   token <resource>  -> `token <access token>` (from its own token endpoint), or `error ...`
//   rotate            -> `rotated`: new signing keys first in the JWKS, the old ones still
//                        published, so tokens signed before stay verifiable
// It exits when stdin closes.
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import Provider, { errors } from 'oidc-provider';

const CLIENT_ID = 'chat-test';
const CLIENT_SECRET = 'the chat test client secret, not a real one';

/// Resource indicator -> [audience, signing algorithm].
const RESOURCES = {
  'urn:wsguard:chat:rs256': ['chat', 'RS256'],
  'urn:wsguard:chat:es256': ['chat', 'ES256'],
  'urn:wsguard:chat:eddsa': ['chat', 'EdDSA'],
  'urn:wsguard:other': ['other', 'RS256'],
};

let generation = 0;

/// A fresh signing key for each algorithm, as private JWKs with a `kid` naming the round.
function signingKeys() {
  generation += 1;
  const jwk = (pair, kid, alg) => ({
    ...pair.privateKey.export({ format: 'jwk' }),
    kid,
    alg,
    use: 'sig',
  });
  return [
    jwk(generateKeyPairSync('rsa', { modulusLength: 2048 }), `rs-${generation}`, 'RS256'),
    jwk(generateKeyPairSync('ec', { namedCurve: 'P-256' }), `es-${generation}`, 'ES256'),
    jwk(generateKeyPairSync('ed25519'), `ed-${generation}`, 'EdDSA'),
  ];
}

function provider(issuer, keys) {
  const oidc = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    jwks: { keys },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(_ctx, resource) {
          const found = RESOURCES[resource];
          if (!found) throw new errors.InvalidTarget();
          const [audience, alg] = found;
          return {
            scope: 'chat',
            audience,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
  });
  return oidc;
}

let keys = signingKeys();
let current = null;
const server = createServer((req, res) => current(req, res));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  current = provider(issuer, keys).callback();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', async (line) => {
    const [command, argument] = line.trim().split(/\s+/);
    try {
      if (command === 'token') {
        const body = new URLSearchParams({
          grant_type: 'client_credentials',
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          resource: argument,
          scope: 'chat',
        });
        const res = await fetch(`${issuer}/token`, { method: 'POST', body });
        const json = await res.json();
        if (!res.ok || !json.access_token) {
          console.log(`error ${res.status} ${json.error ?? ''}`);
        } else {
          console.log(`token ${json.access_token}`);
        }
      } else if (command === 'rotate') {
        keys = [...signingKeys(), ...keys];
        current = provider(issuer, keys).callback();
        console.log('rotated');
      } else {
        console.log(`error unknown command ${command}`);
      }
    } catch (error) {
      console.log(`error ${String(error).replace(/\s+/g, ' ')}`);
    }
  });
  lines.on('close', () => process.exit(0));
  console.log(`listening ${issuer}`);
});
