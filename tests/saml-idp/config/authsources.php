<?php
/*
 * The IdP's users: a static username:password list (exampleauth:UserPass).
 * The login form is module.php/core/loginuserpass.php?AuthState=..., fields username, password.
 */
$config = [
    // Needed by the admin pages only; harmless.
    'admin' => ['core:AdminPassword'],

    'example-userpass' => [
        'exampleauth:UserPass',
        'alice:alicepw' => [
            'uid' => ['alice'],
            'email' => ['alice@bigcorp.test'],
            'displayName' => ['Alice Example'],
            'groups' => ['engineering', 'staff'],
        ],
        'bob:bobpw' => [
            'uid' => ['bob'],
            'email' => ['bob@bigcorp.test'],
            'displayName' => ['Bob Example'],
            'groups' => ['staff'],
        ],
    ],
];
