<?php
/*
 * SimpleSAMLphp 1.19 (Debian package) configuration for the gatehouse SAML end-to-end tests.
 * Template: the test copies tests/saml-idp/config/ into a temp dir, replaces the {{...}}
 * placeholders in every file, and starts
 *   SIMPLESAMLPHP_CONFIG_DIR=<copy> php -S 127.0.0.1:PORT -t /usr/share/simplesamlphp/www
 * (SIMPLESAMLPHP_CONFIG_DIR is read by SimpleSAML\Utils\Config::getConfigDir()).
 * Only the options that differ from the defaults (or that must be set) are here.
 */
$config = [
    // Absolute URL of the www/ folder, i.e. the php -S docroot: "http://127.0.0.1:PORT/".
    'baseurlpath' => '{{IDP_BASE}}/',

    // All writable state lives in the test's temp dir; the metadata sits next to this file.
    'certdir' => '{{CERT_DIR}}/',
    'metadatadir' => __DIR__ . '/metadata/',
    'loggingdir' => '{{DATA_DIR}}/',
    'datadir' => '{{DATA_DIR}}/',
    'tempdir' => '{{DATA_DIR}}/',

    // Any non-default value will do (the persistent NameID is a hash salted with it).
    'secretsalt' => 'gatehouse-e2e-salt-not-secret',
    'auth.adminpassword' => 'gatehouse-e2e-admin',
    'admin.protectindexpage' => false,
    'admin.protectmetadata' => false,
    'admin.checkforupdates' => false,
    'technicalcontact_name' => 'Gatehouse tests',
    'technicalcontact_email' => 'na@bigcorp.test',
    'timezone' => 'UTC',

    // Log to {{DATA_DIR}}/simplesamlphp.log; 'saml' => true also logs every SAML message.
    'logging.handler' => 'file',
    'logging.logfile' => 'simplesamlphp.log',
    'logging.level' => SimpleSAML\Logger::DEBUG,
    'debug' => ['saml' => true, 'backtraces' => true, 'validatexml' => false],
    'showerrors' => true,
    'errorreporting' => false,
    // true: no "pre-production system" banner on the login page.
    'production' => true,

    // Which parts run: the SAML 2.0 IdP, and the example (static users) auth module.
    'enable.saml20-idp' => true,
    'module.enable' => [
        'core' => true,
        'saml' => true,
        'exampleauth' => true,
    ],

    // PHP sessions, files in {{DATA_DIR}}. The cookies must work over plain http://127.0.0.1,
    // so no Secure flag and no SameSite=None (a browser drops SameSite=None without Secure).
    'store.type' => 'phpsession',
    'session.phpsession.savepath' => '{{DATA_DIR}}',
    'session.phpsession.cookiename' => 'SimpleSAML',
    'session.cookie.secure' => false,
    'session.cookie.samesite' => null,
    'language.cookie.secure' => false,
    'language.cookie.samesite' => null,

    // URLs the IdP may send the browser to (ReturnTo / RelayState of an IdP-initiated logout:
    // SingleLogoutService.php?ReturnTo=URL or initSLO.php?RelayState=URL): any address:port in
    // 127.0.0.0/8 or localhost (the default allows only the IdP's own host:port).
    'trusted.url.domains' => ['127\\.[0-9]+\\.[0-9]+\\.[0-9]+(:[0-9]+)?', 'localhost(:[0-9]+)?'],
    'trusted.url.regex' => true,

    'metadata.sources' => [['type' => 'flatfile']],
    'metadata.sign.enable' => false,

    // No global authproc filters (the SP's own ones are in saml20-sp-remote.php).
    'authproc.idp' => [],
    'authproc.sp' => [],
];
