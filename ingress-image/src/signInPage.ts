// The one page the Ingress serves itself: a form that takes a user's token and posts it to /signin. No script, no
// outside resource; the page's CSP allows only its inline style and posting to its own origin.

export const SIGN_IN_PATH = "/signin";
export const SIGN_OUT_PATH = "/signout";

export const SIGN_IN_PAGE_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "cache-control": "no-store",
    // Not no-referrer: with it a browser sends `Origin: null` on the form post, which the origin check refuses.
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
} as const;

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The form; `next` (already checked by `signInNext`) rides along in a hidden field, `failed` says the last try was refused. */
export function signInPage({ next, failed }: { next?: string; failed?: boolean }): string {
    return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Sign in: OpenClaw agents</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}label,input,button{display:block;width:100%;box-sizing:border-box}input{margin:.5rem 0 1rem;padding:.5rem;font-family:monospace}button{padding:.5rem}.failed{color:#b00020}</style></head>
<body>
<h1>Sign in</h1>
${failed ? `<p class="failed" role="alert">That token was not accepted.</p>\n` : ""}<form method="post" action="${SIGN_IN_PATH}">
<label for="token">Your Ingress token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
${next ? `<input type="hidden" name="next" value="${escapeHtml(next)}">\n` : ""}<button type="submit">Sign in</button>
</form>
<form method="post" action="${SIGN_OUT_PATH}"><p>Done? <button type="submit">Sign out</button></p></form>
</body>
</html>
`;
}
