// A local OpenID provider for Tollgate's single sign-on: panva's certified
// `oidc-provider` (npm), configured for development and the SSO tests, with
// a minimal login and consent form of our own (docs/sign-in-sso.md).
//
//   node provider.mjs [--port 9096] [--host 127.0.0.1] [--accounts FILE]
//
// Environment: OIDC_PORT, OIDC_HOST, OIDC_ISSUER (default http://HOST:PORT),
// OIDC_ACCOUNTS (default: accounts.json next to this file).
//
// What it offers:
// - dynamic client registration at /reg, open (no initial access token), so
//   every test registers its own client with its own redirect URI;
// - the authorization code flow with PKCE required for every client (S256);
// - accounts from a JSON file, re-read at each sign-in, each with a password
//   and the claims `email`, `name` and `tollgate_roles` (scopes `email`,
//   `profile` and `tollgate`);
// - everything in memory: a restart forgets clients, grants and signing keys.
//
// Not for production: development signing keys, no persistence.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    accounts: { type: 'string' },
  },
});
const host = args.host ?? process.env.OIDC_HOST ?? '127.0.0.1';
const port = Number(args.port ?? process.env.OIDC_PORT ?? 9096);
const issuer = process.env.OIDC_ISSUER ?? `http://${host}:${port}`;
const accountsFile = args.accounts ?? process.env.OIDC_ACCOUNTS ?? join(here, 'accounts.json');

// { "<login>": { "password", "sub", "email", "name", "tollgate_roles": [] } }
function loadAccounts() {
  return JSON.parse(readFileSync(accountsFile, 'utf8'));
}

function accountBySub(sub) {
  return Object.values(loadAccounts()).find((a) => a.sub === sub);
}

const provider = new Provider(issuer, {
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
  },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    tollgate: ['tollgate_roles'],
  },
  scopes: ['openid', 'email', 'profile', 'tollgate', 'offline_access'],
  // Fixed cookie keys: the provider's cookies are signed; these only need
  // to outlive one sign-in of a development provider.
  cookies: { keys: ['tollgate-dev-oidc-cookie-key'] },
  async findAccount(_ctx, sub) {
    const account = accountBySub(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: account.email,
          email_verified: true,
          name: account.name,
          tollgate_roles: account.tollgate_roles ?? [],
        };
      },
    };
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, status, title, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`);
}

function loginForm(res, uid, status, message) {
  page(res, status, 'Sign in to the Tollgate dev OpenID provider', `
${message ? `<p role="alert">${escapeHtml(message)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
  <label>Login <input name="login" autocomplete="username" required autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Sign in</button>
</form>`);
}

function consentForm(res, uid, client, details) {
  const scopes = (details.missingOIDCScope ?? []).join(', ');
  page(res, 200, 'Authorize', `
<p>${escapeHtml(client?.clientName ?? client?.clientId ?? 'The application')} asks for: ${escapeHtml(scopes)}</p>
<form method="post" action="/interaction/${escapeHtml(uid)}/confirm">
  <button type="submit">Continue</button>
</form>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// The interaction routes: GET /interaction/<uid>, POST .../login, .../confirm.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    page(res, 400, 'Unknown interaction', '<p>This sign-in is not the one in progress.</p>');
    return;
  }
  const { prompt, params } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      loginForm(res, uid, 200);
    } else {
      const client = await provider.Client.find(params.client_id);
      consentForm(res, uid, client, prompt.details);
    }
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const account = loadAccounts()[form.get('login') ?? ''];
    if (!account || account.password !== form.get('password')) {
      loginForm(res, uid, 401, 'Unknown login or wrong password.');
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'POST' && action === 'confirm') {
    await readForm(req);
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const missing = prompt.details ?? {};
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  page(res, 405, 'Method not allowed', '');
}

const oidc = provider.callback();
const server = createServer((req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/(login|confirm))?(?:\?.*)?$/.exec(req.url ?? '');
  if (!match) {
    oidc(req, res);
    return;
  }
  interaction(req, res, match[1], match[2]).catch((err) => {
    console.error('interaction failed', err);
    if (!res.headersSent) page(res, 400, 'Sign-in failed', `<p>${escapeHtml(err.message)}</p>`);
  });
});
server.listen(port, host, () => {
  console.log(`oidc-provider listening: issuer ${issuer}, accounts ${accountsFile}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
