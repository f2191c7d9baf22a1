#!/usr/bin/env python3
"""Smoke test of the SimpleSAMLphp IdP used by gatehouse's SAML end-to-end tests.

Standalone (python3 stdlib, the `openssl` CLI, `php` with the dom/xml extensions and the
Debian `simplesamlphp` package). It does what the Rust test will do:

  1. makes the IdP key + self-signed certificate with openssl,
  2. copies config/ into a temp dir and fills the {{...}} placeholders,
  3. starts `php -S 127.0.0.1:PORT -t /usr/share/simplesamlphp/www` with
     SIMPLESAMLPHP_CONFIG_DIR pointing at the copy,
  4. acts as the browser of an SP-initiated login (HTTP-Redirect AuthnRequest, login form,
     auto-POST form carrying SAMLResponse to the ACS, which is only captured here), twice,
     checking that the persistent NameID is the same, then ForceAuthn, a RequestedAuthnContext
     the IdP cannot meet, and an SP-initiated logout.

Usage: python3 tests/saml-idp/smoke.py [--keep] [--quiet] [--host 127.0.0.2]
Exit status 0 when every check passed.
"""

import base64
import datetime
import hashlib
import html
import http.client
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SSP_WWW = "/usr/share/simplesamlphp/www"

SP_ENTITY_ID = "https://sp.gatehouse.test/saml/metadata"
ACS_URL = "http://127.0.0.1:9/saml/acs"  # nothing listens: the form that would POST here is captured
SLO_URL = "http://127.0.0.1:9/saml/slo"

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
}
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

QUIET = "--quiet" in sys.argv
# --host 127.0.0.2 serves the IdP on another loopback address (its cookies then live apart
# from those of an SP on 127.0.0.1: cookies are per host, not per port)
IDP_HOST = sys.argv[sys.argv.index("--host") + 1] if "--host" in sys.argv else "127.0.0.1"
FAILURES = []


def say(*args):
    print(*args, flush=True)


def check(cond, what):
    say(("  ok   " if cond else "  FAIL ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


# ---------------------------------------------------------------- setup


def free_port():
    with socket.socket() as s:
        s.bind((IDP_HOST, 0))
        return s.getsockname()[1]


def make_cert(cert_dir):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
         "-subj", "/CN=gatehouse-test-idp",
         "-keyout", os.path.join(cert_dir, "idp.key"), "-out", os.path.join(cert_dir, "idp.crt")],
        check=True, capture_output=True)


def fill_templates(src, dst, values):
    """Copies the template tree src to dst, replacing every {{NAME}} (an unknown one is an error)."""
    for root, _dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in files:
            with open(os.path.join(root, name), encoding="utf-8") as f:
                text = f.read()
            for key, value in values.items():
                text = text.replace("{{%s}}" % key, value)
            left = re.findall(r"\{\{[A-Z_]+\}\}", text)
            if left:
                raise SystemExit(f"unfilled placeholders in {name}: {left}")
            with open(os.path.join(dst, rel, name), "w", encoding="utf-8") as f:
                f.write(text)


# ---------------------------------------------------------------- a minimal browser


class Browser:
    """Keeps cookies (by name; one host) and follows redirects by hand, logging each hop."""

    def __init__(self, name):
        self.name = name
        self.cookies = {}

    def request(self, method, url, form=None):
        u = urllib.parse.urlsplit(url)
        if not u.hostname.startswith("127.") or u.port == 9:
            raise RuntimeError(f"refusing to leave the IdP: {url}")
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        path = u.path + ("?" + u.query if u.query else "")
        headers = {"User-Agent": "gatehouse-smoke"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        for sc in resp.msg.get_all("Set-Cookie") or []:
            pair, *attrs = [p.strip() for p in sc.split(";")]
            k, _, v = pair.partition("=")
            gone = v in ("", "deleted") or any(a.lower() == "max-age=0" for a in attrs)
            if gone:
                self.cookies.pop(k, None)
            else:
                self.cookies[k] = v
            if not QUIET:
                say(f"    [{self.name}] Set-Cookie: {sc}")
        conn.close()
        return resp.status, dict(resp.getheaders()), data

    def go(self, method, url, form=None, stop_at=None):
        """Follows redirects; returns (status, headers, body, final_url). Stops before fetching a
        Location that starts with stop_at (returning that 3xx)."""
        for _ in range(15):
            status, headers, body = self.request(method, url, form)
            if not QUIET:
                say(f"    [{self.name}] {method} {shorten(url)} -> {status}")
            loc = headers.get("Location")
            if status in (301, 302, 303, 307) and loc:
                loc = resolve(url, loc)
                if stop_at and loc.startswith(stop_at):
                    return status, headers, body, loc
                method, form, url = "GET", None, loc
                continue
            return status, headers, body, url
        raise RuntimeError("too many redirects")


def resolve(base, ref):
    """RFC 3986 reference resolution as a browser does it (urljoin keeps the base's query for a
    bare "?", a browser does not: the login form's action="?" posts to loginuserpass.php?)."""
    if ref.startswith("?"):
        return base.split("?", 1)[0].split("#", 1)[0] + ref
    return urllib.parse.urljoin(base, ref)


def shorten(url, n=140):
    return url if len(url) <= n else url[:n] + "..."


def parse_form(page):
    """The first <form>: (action, method, {name: value}) with entities decoded, plus the raw
    attribute texts (to see how values are escaped)."""
    forms = list(re.finditer(r"<form\b([^>]*)>(.*?)</form>", page, re.S | re.I))
    if not forms:
        return None
    m = next((f for f in forms if re.search(r'name="(password|SAMLResponse|SAMLRequest)"', f.group(2))),
             forms[0])
    attrs, inner = m.group(1), m.group(2)
    action = re.search(r'action="([^"]*)"', attrs)
    method = re.search(r'method="([^"]*)"', attrs, re.I)
    fields, raw = {}, {}
    for tag in re.findall(r"<input\b[^>]*>", inner, re.I):
        name = re.search(r'name="([^"]*)"', tag)
        if not name:
            continue
        value = re.search(r'value="([^"]*)"', tag)
        fields[html.unescape(name.group(1))] = html.unescape(value.group(1)) if value else ""
        raw[name.group(1)] = tag
    return {
        "action": html.unescape(action.group(1)) if action else None,
        "action_raw": action.group(1) if action else None,
        "method": method.group(1) if method else None,
        "fields": fields,
        "raw": raw,
        "html": m.group(0),
    }


# ---------------------------------------------------------------- SAML messages


def now_z():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id():
    return "_" + secrets.token_hex(16)


def authn_request(sso_url, force=False, mfa=False):
    rid = new_id()
    extra = ' ForceAuthn="true"' if force else ""
    rac = ""
    if mfa:
        rac = ('<samlp:RequestedAuthnContext Comparison="exact">'
               "<saml:AuthnContextClassRef>https://refeds.org/profile/mfa</saml:AuthnContextClassRef>"
               "</samlp:RequestedAuthnContext>")
    xml = (f'<samlp:AuthnRequest xmlns:samlp="{NS["samlp"]}" xmlns:saml="{NS["saml"]}" '
           f'ID="{rid}" Version="2.0" IssueInstant="{now_z()}" Destination="{sso_url}" '
           f'AssertionConsumerServiceURL="{ACS_URL}" '
           f'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"{extra}>'
           f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer>"
           f'<samlp:NameIDPolicy Format="{PERSISTENT}" AllowCreate="true"/>'
           f"{rac}</samlp:AuthnRequest>")
    return rid, xml


def logout_request(slo_url, name_id, spnq, session_index):
    rid = new_id()
    spnq_attr = f' SPNameQualifier="{spnq}"' if spnq else ""
    xml = (f'<samlp:LogoutRequest xmlns:samlp="{NS["samlp"]}" xmlns:saml="{NS["saml"]}" '
           f'ID="{rid}" Version="2.0" IssueInstant="{now_z()}" Destination="{slo_url}">'
           f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer>"
           f'<saml:NameID Format="{PERSISTENT}"{spnq_attr}>{name_id}</saml:NameID>'
           f"<samlp:SessionIndex>{session_index}</samlp:SessionIndex>"
           "</samlp:LogoutRequest>")
    return rid, xml


def redirect_url(endpoint, param, xml, relay=None):
    """HTTP-Redirect binding: raw DEFLATE, base64, URL-encode."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = c.compress(xml.encode()) + c.flush()
    q = {param: base64.b64encode(raw).decode()}
    if relay is not None:
        q["RelayState"] = relay
    return endpoint + ("&" if "?" in endpoint else "?") + urllib.parse.urlencode(q)


def sign_redirect(url, key_path):
    """Adds SigAlg + Signature (RSA-SHA256 over the query as sent) to a redirect-binding URL."""
    q = url + "&" + urllib.parse.urlencode({"SigAlg": RSA_SHA256})
    signed = q.split("?", 1)[1].encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_path], input=signed,
                         capture_output=True, check=True).stdout
    return q + "&" + urllib.parse.urlencode({"Signature": base64.b64encode(sig).decode()})


def verify_redirect(url, cert_path):
    """Checks a received redirect-binding query signature (the raw query text, in the order
    SAMLRequest|SAMLResponse, RelayState, SigAlg) against cert_path with openssl."""
    raw = dict(p.split("=", 1) for p in urllib.parse.urlsplit(url).query.split("&"))
    param = "SAMLRequest" if "SAMLRequest" in raw else "SAMLResponse"
    signed = f"{param}={raw[param]}"
    if "RelayState" in raw:
        signed += f"&RelayState={raw['RelayState']}"
    signed += f"&SigAlg={raw['SigAlg']}"
    sig = base64.b64decode(urllib.parse.unquote(raw["Signature"]))
    with tempfile.TemporaryDirectory() as d:
        pub, sigf = os.path.join(d, "pub.pem"), os.path.join(d, "sig")
        with open(pub, "wb") as f:
            f.write(subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", cert_path],
                                   capture_output=True, check=True).stdout)
        with open(sigf, "wb") as f:
            f.write(sig)
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature", sigf],
                           input=signed.encode(), capture_output=True)
    return r.returncode == 0


def expected_name_id(idp_entity_id, sp_entity_id, uid, salt="gatehouse-e2e-salt-not-secret"):
    """What saml:PersistentNameID computes (salt = 'secretsalt' in config.php)."""
    data = f"uidhashbase{salt}"
    for part in (idp_entity_id, sp_entity_id, uid):
        data += f"{len(part)}:{part}"
    return hashlib.sha1((data + salt).encode()).hexdigest()


def inflate(b64):
    return zlib.decompress(base64.b64decode(b64), -15).decode()


def hostile_constructs(xml):
    """What gatehouse's SP refuses: comments, DOCTYPE, PIs other than the XML declaration, CDATA."""
    found = []
    body = re.sub(r"^\s*<\?xml[^?]*\?>", "", xml)
    if "<!--" in body:
        found.append("comment")
    if re.search(r"<!DOCTYPE", body, re.I):
        found.append("DOCTYPE")
    if "<?" in body:
        found.append("processing instruction")
    if "<![CDATA[" in body:
        found.append("CDATA")
    if re.search(r"&(?!(amp|lt|gt|quot|apos);)", body):
        found.append("entity/character reference other than the five predefined")
    return found


def signature_facts(el):
    """For a direct-child ds:Signature of el: (SignatureMethod, [DigestMethod...], Reference URI)."""
    sig = el.find("ds:Signature", NS)
    if sig is None:
        return None
    sm = sig.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm")
    refs = sig.findall("ds:SignedInfo/ds:Reference", NS)
    dms = [r.find("ds:DigestMethod", NS).get("Algorithm") for r in refs]
    uris = [r.get("URI") for r in refs]
    transforms = [t.get("Algorithm") for r in refs for t in r.findall("ds:Transforms/ds:Transform", NS)]
    return {"SignatureMethod": sm, "DigestMethod": dms, "URI": uris, "Transforms": transforms,
            "index": list(el).index(sig)}


# ---------------------------------------------------------------- the flows


class Idp:
    def __init__(self, base):
        self.base = base
        self.metadata_url = base + "/saml2/idp/metadata.php"
        self.sso_url = base + "/saml2/idp/SSOService.php"
        self.slo_url = base + "/saml2/idp/SingleLogoutService.php"


def login(idp, browser, user=None, password=None, force=False, mfa=False, label="login", sign_key=None):
    """SP-initiated login. Returns a dict with the captured auto-POST form and the decoded response.
    user=None: expects SSO from the existing session (no login form)."""
    say(f"\n== {label} ({browser.name}{', ForceAuthn' if force else ''}{', RequestedAuthnContext mfa' if mfa else ''})")
    t0 = time.monotonic()
    rid, xml = authn_request(idp.sso_url, force=force, mfa=mfa)
    req_url = redirect_url(idp.sso_url, "SAMLRequest", xml, "abc123")
    if sign_key:
        req_url = sign_redirect(req_url, sign_key)
        say("  (AuthnRequest signed with a key the IdP does not know)")
    status, headers, page, url = browser.go("GET", req_url)
    form = parse_form(page)
    saw_login_form = bool(form and "password" in form["fields"])
    if saw_login_form:
        say(f"  login form at {shorten(url)}")
        say(f"  form action (raw attr) = {form['action_raw']!r}, method={form['method']!r}")
        say(f"  form fields = {sorted(form['fields'])}")
        if user is None:
            check(False, "SSO from the existing session (got a login form instead)")
            return None
        fields = dict(form["fields"])
        fields.update(username=user, password=password)
        action = resolve(url, form["action"])
        status, headers, page, url = browser.go("POST", action, fields)
        form = parse_form(page)
    elif user is not None:
        check(False, f"login form shown (got {status} at {url}:\n{page[:2000]})")
        return None
    if not form or "SAMLResponse" not in form["fields"]:
        check(False, f"auto-POST form with SAMLResponse (got {status} at {url}):\n{page[:3000]}")
        return None
    elapsed = time.monotonic() - t0
    resp_xml = base64.b64decode(form["fields"]["SAMLResponse"]).decode()
    return {"form": form, "page": page, "xml": resp_xml, "request_id": rid, "elapsed": elapsed,
            "saw_login_form": saw_login_form, "final_url": url}


def describe_response(r, show_xml):
    form = r["form"]
    say(f"  final page: {r['final_url']}")
    if show_xml:
        say("  ---- final page HTML ----")
        say(r["page"])
        say("  ---- end ----")
    say(f"  form action (raw attr) = {form['action_raw']!r}  method={form['method']!r}")
    say(f"  form fields = {sorted(form['fields'])}; RelayState = {form['fields'].get('RelayState')!r}")
    for name, tag in form["raw"].items():
        say(f"  raw input {name}: {shorten(tag, 200)}")
    check(form["action"] == ACS_URL, f"form action is ACS_URL ({form['action']})")
    check(form["fields"].get("RelayState") == "abc123", "RelayState echoed")
    if show_xml:
        say("  ---- decoded SAMLResponse ----")
        say(r["xml"])
        say("  ---- end ----")
    root = ET.fromstring(r["xml"])
    a = root.find("saml:Assertion", NS)
    nid = a.find("saml:Subject/saml:NameID", NS)
    stmt = a.find("saml:AuthnStatement", NS)
    facts = {
        "Status": root.find("samlp:Status/samlp:StatusCode", NS).get("Value"),
        "InResponseTo": root.get("InResponseTo"),
        "Destination": root.get("Destination"),
        "Issuer": root.find("saml:Issuer", NS).text,
        "NameID": nid.text,
        "NameID.Format": nid.get("Format"),
        "NameID.SPNameQualifier": nid.get("SPNameQualifier"),
        "NameID.NameQualifier": nid.get("NameQualifier"),
        "SessionIndex": stmt.get("SessionIndex"),
        "SessionNotOnOrAfter": stmt.get("SessionNotOnOrAfter"),
        "AuthnContextClassRef": stmt.find("saml:AuthnContext/saml:AuthnContextClassRef", NS).text,
        "Audience": [x.text for x in a.findall("saml:Conditions/saml:AudienceRestriction/saml:Audience", NS)],
        "SubjectConfirmationData": a.find("saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData", NS).attrib,
        "Attributes": [(x.get("Name"), x.get("NameFormat"),
                        [(v.text, {k: vv for k, vv in v.attrib.items()}) for v in x.findall("saml:AttributeValue", NS)])
                       for x in a.findall("saml:AttributeStatement/saml:Attribute", NS)],
        "Response signature": signature_facts(root),
        "Assertion signature": signature_facts(a),
    }
    for k, v in facts.items():
        say(f"  {k}: {v}")
    check(facts["Status"] == "urn:oasis:names:tc:SAML:2.0:status:Success", "status Success")
    check(facts["InResponseTo"] == r["request_id"], "InResponseTo = our request ID")
    check(facts["NameID.Format"] == PERSISTENT, "NameID format persistent")
    check(facts["Response signature"] is not None, "Response signed (ds:Signature is a direct child)")
    check(facts["Assertion signature"] is not None, "Assertion signed (ds:Signature is a direct child)")
    for which in ("Response signature", "Assertion signature"):
        s = facts[which]
        if s:
            check(s["SignatureMethod"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                  f"{which}: RSA-SHA256")
    bad = hostile_constructs(r["xml"])
    check(not bad, f"SAMLResponse has no comment/DOCTYPE/PI/CDATA ({bad})")
    return facts


def main():
    keep = "--keep" in sys.argv
    mods = subprocess.run(["php", "-m"], capture_output=True, text=True, check=True).stdout.split()
    missing = [m for m in ("dom", "openssl", "zlib", "session", "libxml") if m not in mods]
    if missing:
        raise SystemExit(f"php lacks {missing} (Debian: apt-get install php-xml for dom)")
    tmp = tempfile.mkdtemp(prefix="gatehouse-saml-idp-")
    cert_dir, data_dir, conf_dir = (os.path.join(tmp, d) for d in ("certs", "data", "config"))
    os.makedirs(cert_dir)
    os.makedirs(data_dir)
    proc = None
    try:
        t0 = time.monotonic()
        make_cert(cert_dir)
        sp_key = os.path.join(tmp, "sp-throwaway.key")  # a key the IdP has never seen
        subprocess.run(["openssl", "genrsa", "-out", sp_key, "2048"], check=True, capture_output=True)
        t_cert = time.monotonic() - t0
        port = free_port()
        base = f"http://{IDP_HOST}:{port}"
        fill_templates(os.path.join(HERE, "config"), conf_dir, {
            "IDP_BASE": base, "SP_ENTITY_ID": SP_ENTITY_ID, "ACS_URL": ACS_URL, "SLO_URL": SLO_URL,
            "CERT_DIR": cert_dir, "DATA_DIR": data_dir,
            "SP_CERT_DATA": "", "VALIDATE_REQUESTS": "false",
        })
        env = dict(os.environ, SIMPLESAMLPHP_CONFIG_DIR=conf_dir)
        log = open(os.path.join(data_dir, "php-server.log"), "wb")
        t1 = time.monotonic()
        proc = subprocess.Popen(
            ["php", "-d", f"session.save_path={data_dir}", "-d", "display_errors=stderr",
             "-S", f"{IDP_HOST}:{port}", "-t", SSP_WWW],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        idp = Idp(base)
        say(f"temp dir {tmp}; IdP {base}; SIMPLESAMLPHP_CONFIG_DIR={conf_dir}")

        # ready = the metadata URL answers 200
        md = None
        for _ in range(200):
            try:
                status, headers, body = Browser("probe").request("GET", idp.metadata_url)
                # an error page is HTTP 200 too (text/html): ready means the XML
                if status == 200 and headers.get("Content-Type", "").startswith("application/samlmetadata+xml"):
                    md = (headers, body)
                    break
                if status == 200:
                    raise SystemExit(f"metadata URL answered an HTML page (error?); see {data_dir}:\n{body[:2000]}")
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit("php -S exited")
            time.sleep(0.05)
        t_ready = time.monotonic() - t1
        say(f"openssl key+cert: {t_cert:.2f}s; php -S ready (metadata 200) after {t_ready:.2f}s")
        if md is None:
            raise SystemExit("IdP never answered")

        # ---- metadata
        say("\n== metadata " + idp.metadata_url)
        say(f"  Content-Type: {md[0].get('Content-Type')}")
        if not QUIET:
            say(md[1])
        bad = hostile_constructs(md[1])
        check(not bad, f"metadata has no comment/DOCTYPE/PI/CDATA ({bad})")
        mroot = ET.fromstring(md[1])
        check(mroot.get("entityID") == idp.metadata_url, f"entityID = {mroot.get('entityID')}")
        for tag in ("SingleSignOnService", "SingleLogoutService"):
            for e in mroot.iter(f"{{{NS['md']}}}{tag}"):
                say(f"  {tag} {e.get('Binding')} {e.get('Location')}")
        say(f"  NameIDFormat: {[e.text for e in mroot.iter('{%s}NameIDFormat' % NS['md'])]}")
        say(f"  metadata signed: {mroot.find('ds:Signature', NS) is not None}")
        # same document with ?output=xhtml would be the HTML page; the plain URL is the XML

        # ---- login 1 and 2 (fresh browsers), same NameID
        a1 = Browser("alice-1")
        r1 = login(idp, a1, "alice", "alicepw", label="login 1")
        if not r1:
            return 1
        f1 = describe_response(r1, show_xml=not QUIET)
        say(f"  (one full login, AuthnRequest -> auto-POST form: {r1['elapsed']:.2f}s)")
        say(f"  IdP cookies: {sorted(a1.cookies)}")

        r2 = login(idp, Browser("alice-2"), "alice", "alicepw", label="login 2, new browser",
                   sign_key=sp_key)
        if r2:
            f2 = describe_response(r2, show_xml=False)
            check(f2["NameID"] == f1["NameID"], f"same NameID across logins ({f2['NameID']})")
            check(f2["SessionIndex"] != f1["SessionIndex"], "SessionIndex differs")
        check(f1["NameID"] == expected_name_id(idp.metadata_url, SP_ENTITY_ID, "alice"),
              "NameID = sha1(uidhashbase+salt, len:IdP entity ID, len:SP entity ID, len:uid, salt)")

        rb = login(idp, Browser("bob"), "bob", "bobpw", label="bob")
        if rb:
            fb = describe_response(rb, show_xml=False)
            check(fb["NameID"] != f1["NameID"], "bob's NameID differs from alice's")

        r3 = login(idp, a1, label="login 3, same browser (SSO)")
        if r3:
            f3 = describe_response(r3, show_xml=False)
            check(not r3["saw_login_form"], "SSO without the login form")
            check(f3["NameID"] == f1["NameID"], "same NameID on SSO")

        # ForceAuthn: with a live session, the form must come again
        r4 = login(idp, a1, "alice", "alicepw", force=True, label="ForceAuthn")
        if r4:
            check(r4["saw_login_form"], "ForceAuthn=true shows the login form despite the session")
            f4 = describe_response(r4, show_xml=False)

        # RequestedAuthnContext the IdP cannot satisfy (fresh browser and with the session)
        r5 = login(idp, Browser("alice-mfa"), "alice", "alicepw", mfa=True, label="RequestedAuthnContext mfa")
        if r5:
            f5 = describe_response(r5, show_xml=False)
            say(f"  -> IdP answered {f5['Status']} with AuthnContextClassRef {f5['AuthnContextClassRef']}")

        # ---- SP-initiated logout with browser a1; the association is the last login's
        last = f4 if r4 else f1
        say("\n== SP-initiated logout (" + a1.name + ")")
        lid, lxml = logout_request(idp.slo_url, last["NameID"], last["NameID.SPNameQualifier"], last["SessionIndex"])
        say("  LogoutRequest: " + lxml)
        t2 = time.monotonic()
        status, headers, page, url = a1.go("GET", redirect_url(idp.slo_url, "SAMLRequest", lxml, "bye42"),
                                           stop_at=SLO_URL)
        say(f"  logout took {time.monotonic() - t2:.2f}s")
        if not url.startswith(SLO_URL):
            check(False, f"IdP redirects to SLO_URL (ended with {status} at {url}):\n{page[:3000]}")
        else:
            say(f"  {status} Location: {shorten(url, 400)}")
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
            say(f"  query parameters: {sorted(q)}")
            check("SAMLResponse" in q, "redirect carries SAMLResponse")
            check(q.get("RelayState") == ["bye42"], f"RelayState echoed ({q.get('RelayState')})")
            say(f"  SigAlg: {q.get('SigAlg')}; Signature present: {'Signature' in q}")
            if "Signature" in q:
                check(verify_redirect(url, os.path.join(cert_dir, "idp.crt")),
                      "LogoutResponse query signature verifies with idp.crt (RSA-SHA256)")
            lr = inflate(q["SAMLResponse"][0])
            say("  ---- decoded LogoutResponse ----")
            say(lr)
            say("  ---- end ----")
            bad = hostile_constructs(lr)
            check(not bad, f"LogoutResponse has no comment/DOCTYPE/PI/CDATA ({bad})")
            lroot = ET.fromstring(lr)
            check(lroot.get("InResponseTo") == lid, "LogoutResponse InResponseTo = our ID")
            st = lroot.find("samlp:Status/samlp:StatusCode", NS).get("Value")
            check(st == "urn:oasis:names:tc:SAML:2.0:status:Success", f"LogoutResponse status {st}")
            check(lroot.get("Destination") == SLO_URL, f"LogoutResponse Destination {lroot.get('Destination')}")
            say(f"  LogoutResponse embedded ds:Signature: {lroot.find('ds:Signature', NS) is not None}")
            # Logged out: a new AuthnRequest must show the form again
            r6 = login(idp, a1, "alice", "alicepw", label="after logout")
            if r6:
                check(r6["saw_login_form"], "after logout the login form is shown again")

        # ---- IdP-initiated logout: browser alice-2 still has its session (login 2)
        say("\n== IdP-initiated logout (new browser alice-2b: login, then SingleLogoutService.php?ReturnTo=...)")
        a2 = Browser("alice-2b")
        r7 = login(idp, a2, "alice", "alicepw", label="login for IdP-initiated logout")
        if r7:
            f7 = describe_response(r7, show_xml=False)
            return_to = "http://127.0.0.1:9/logged-out"
            status, headers, page, url = a2.go(
                "GET", idp.slo_url + "?" + urllib.parse.urlencode({"ReturnTo": return_to}), stop_at=SLO_URL)
            if not url.startswith(SLO_URL):
                check(False, f"IdP sends a LogoutRequest to SLO_URL (ended with {status} at {url}):\n{page[:3000]}")
            else:
                say(f"  {status} Location: {shorten(url, 400)}")
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
                say(f"  query parameters: {sorted(q)}")
                check("SAMLRequest" in q and "Signature" in q and q.get("SigAlg") == [RSA_SHA256],
                      "IdP's LogoutRequest is signed (SigAlg rsa-sha256 + Signature)")
                check(verify_redirect(url, os.path.join(cert_dir, "idp.crt")),
                      "LogoutRequest query signature verifies with idp.crt")
                lreq = inflate(q["SAMLRequest"][0])
                say("  ---- decoded LogoutRequest ----")
                say(lreq)
                say("  ---- end ----")
                bad = hostile_constructs(lreq)
                check(not bad, f"LogoutRequest has no comment/DOCTYPE/PI/CDATA ({bad})")
                qroot = ET.fromstring(lreq)
                check(qroot.find("saml:NameID", NS).text == f7["NameID"], "LogoutRequest NameID = the login's")
                check(qroot.find("samlp:SessionIndex", NS).text == f7["SessionIndex"],
                      "LogoutRequest SessionIndex = the login's")
                # the SP answers with an (unsigned) LogoutResponse to the IdP's SLO endpoint
                resp_xml = (f'<samlp:LogoutResponse xmlns:samlp="{NS["samlp"]}" xmlns:saml="{NS["saml"]}" '
                            f'ID="{new_id()}" Version="2.0" IssueInstant="{now_z()}" '
                            f'Destination="{idp.slo_url}" InResponseTo="{qroot.get("ID")}">'
                            f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer><samlp:Status><samlp:StatusCode "
                            'Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:LogoutResponse>')
                relay = q.get("RelayState", [None])[0]
                status, headers, page, url = a2.go(
                    "GET", redirect_url(idp.slo_url, "SAMLResponse", resp_xml, relay), stop_at=return_to)
                check(url.startswith(return_to), f"after the SP's LogoutResponse the IdP sends the browser to ReturnTo ({status} {shorten(url)})")

        say(f"\nIdP cookies kept by the browser: {sorted(a1.cookies)}")
        say(f"php -S ready after {t_ready:.2f}s; first login {r1['elapsed']:.2f}s; "
            f"whole run {time.monotonic() - t0:.2f}s")
        say(f"\n{'ALL CHECKS PASSED' if not FAILURES else 'FAILED: ' + '; '.join(FAILURES)}")
        return 0 if not FAILURES else 1
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if FAILURES or keep:
            say(f"(kept {tmp}: see data/simplesamlphp.log and data/php-server.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
