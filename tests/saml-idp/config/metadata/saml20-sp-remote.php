<?php
/*
 * The SP under test (gatehouse).
 */
$metadata['{{SP_ENTITY_ID}}'] = [
    'AssertionConsumerService' => [
        [
            'Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
            'Location' => '{{ACS_URL}}',
            'index' => 0,
        ],
    ],
    'SingleLogoutService' => [
        [
            'Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect',
            'Location' => '{{SLO_URL}}',
        ],
    ],

    'NameIDFormat' => 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent',

    // Attributes go out under their plain names with the "basic" NameFormat.
    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',

    // Signs the LogoutRequests/LogoutResponses the IdP sends this SP (redirect binding:
    // SigAlg + Signature in the query, RSA-SHA256).
    'sign.logout' => true,
    // {{SP_CERT_DATA}}: the SP's certificate (base64 DER) when assertions are to be encrypted
    // for it (empty: plain assertions).
    'assertion.encryption' => '{{SP_CERT_DATA}}' !== '',
    'certData' => '{{SP_CERT_DATA}}',
    // {{VALIDATE_REQUESTS}}: true when the SP signs its requests: the IdP then refuses any
    // AuthnRequest or LogoutRequest without a valid signature by certData's key.
    'validate.authnrequest' => {{VALIDATE_REQUESTS}},
    'validate.logout' => {{VALIDATE_REQUESTS}},

    // The SP's AuthnRequests and LogoutRequests may be unsigned, and a signature on them is
    // not checked. To make the IdP require and verify them, add the SP's certificate
    // (base64 DER, no PEM armour lines) and turn validation on:
    //   'certData' => 'MIIC...', 'validate.authnrequest' => true, 'validate.logout' => true,
    // (then an unsigned or badly signed request gets an "Unhandled exception" page, HTTP 200).

    'authproc' => [
        // Persistent NameID = sha1(secretsalt, IdP entity ID, SP entity ID, uid): stable
        // across logins (but it changes with the IdP's port, which is in its entity ID).
        10 => ['class' => 'saml:PersistentNameID', 'attribute' => 'uid'],
        // Release only these attributes (uid stays out).
        20 => ['class' => 'core:AttributeLimit', 'email', 'displayName', 'groups'],
    ],
];
