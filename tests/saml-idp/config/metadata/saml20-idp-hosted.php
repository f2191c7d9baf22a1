<?php
/*
 * The hosted IdP. Its entity ID is its metadata URL.
 * Key and certificate are PEM files in {{CERT_DIR}} (the test makes them with openssl).
 */
$metadata['{{IDP_BASE}}/saml2/idp/metadata.php'] = [
    'host' => '__DEFAULT__',
    'privatekey' => 'idp.key',
    'certificate' => 'idp.crt',
    'auth' => 'example-userpass',

    // Sign both the <samlp:Response> and the <saml:Assertion> (both default to true in 1.19;
    // set here so that it is explicit), with RSA-SHA256 (SHA-256 digests).
    'saml20.sign.response' => true,
    'saml20.sign.assertion' => true,
    'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',

    'NameIDFormat' => 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent',
];
