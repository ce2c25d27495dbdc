//! The control plane's certificates, made with the `openssl` command line: a CA, the API
//! server's serving certificate, client certificates for the admin and the controllers, and
//! the service-account signing key pair. ECDSA P-256 throughout (fast to generate).

use crate::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The API server's first service IP: the `kubernetes` Service in `198.19.0.0/16`, the block
/// the tests use for services.
pub(crate) const FIRST_SERVICE_IP: &str = "198.19.0.1";
/// The service range handed to the API server and the controller manager.
pub(crate) const SERVICE_RANGE: &str = "198.19.0.0/16";

/// A certificate and its key.
#[derive(Debug, Clone)]
pub(crate) struct KeyPair {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Every file the components need.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub(crate) ca: KeyPair,
    pub(crate) apiserver: KeyPair,
    pub(crate) admin: KeyPair,
    pub(crate) controller_manager: KeyPair,
    pub(crate) scheduler: KeyPair,
    pub(crate) service_account_key: PathBuf,
    pub(crate) service_account_pub: PathBuf,
}

/// Writes the PKI into `dir` (created).
pub(crate) fn generate(dir: &Path) -> Result<Pki, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    // A minimal configuration, so that the host's openssl.cnf does not matter.
    let config = dir.join("openssl.cnf");
    write(&config, "[req]\ndistinguished_name = dn\n[dn]\n")?;
    let ssl = Openssl {
        dir,
        config: &config,
    };

    let ca = ssl.key_pair("ca")?;
    ssl.run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &s(&ca.key),
        "-subj",
        "/CN=runnel-e2e-ca",
        "-days",
        "3",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out",
        &s(&ca.cert),
    ])?;
    let sans = [
        format!("IP:127.0.0.1,IP:{FIRST_SERVICE_IP},DNS:localhost,DNS:kubernetes"),
        "DNS:kubernetes.default,DNS:kubernetes.default.svc".into(),
        "DNS:kubernetes.default.svc.cluster.local".into(),
    ]
    .join(",");
    let apiserver = ssl.leaf(
        &ca,
        "apiserver",
        "/CN=kube-apiserver",
        "serverAuth",
        Some(&sans),
        2,
    )?;
    let admin = ssl.leaf(
        &ca,
        "admin",
        "/O=system:masters/CN=runnel-e2e-admin",
        "clientAuth",
        None,
        3,
    )?;
    let controller_manager = ssl.leaf(
        &ca,
        "controller-manager",
        "/CN=system:kube-controller-manager",
        "clientAuth",
        None,
        4,
    )?;
    let scheduler = ssl.leaf(
        &ca,
        "scheduler",
        "/CN=system:kube-scheduler",
        "clientAuth",
        None,
        5,
    )?;

    let service_account_key = dir.join("service-account.key");
    let service_account_pub = dir.join("service-account.pub");
    ssl.genkey(&service_account_key)?;
    ssl.run(&[
        "pkey",
        "-in",
        &s(&service_account_key),
        "-pubout",
        "-out",
        &s(&service_account_pub),
    ])?;

    Ok(Pki {
        ca,
        apiserver,
        admin,
        controller_manager,
        scheduler,
        service_account_key,
        service_account_pub,
    })
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

struct Openssl<'a> {
    dir: &'a Path,
    config: &'a Path,
}

impl Openssl<'_> {
    fn run(&self, args: &[&str]) -> Result<(), Error> {
        let output = Command::new("openssl")
            .args(args)
            .env("OPENSSL_CONF", self.config)
            .output()
            .map_err(|source| Error::Spawn {
                program: "openssl (install it: apt-get install openssl)".into(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Command {
                command: format!("openssl {}", args.join(" ")),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    fn genkey(&self, path: &Path) -> Result<(), Error> {
        self.run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &s(path),
        ])
    }

    fn key_pair(&self, name: &str) -> Result<KeyPair, Error> {
        let pair = KeyPair {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        self.genkey(&pair.key)?;
        Ok(pair)
    }

    /// A certificate signed by `ca` for `subject`, with the extended key usage `usage`
    /// (`serverAuth` or `clientAuth`) and, for servers, subject alternative names.
    fn leaf(
        &self,
        ca: &KeyPair,
        name: &str,
        subject: &str,
        usage: &str,
        sans: Option<&str>,
        serial: u32,
    ) -> Result<KeyPair, Error> {
        let pair = self.key_pair(name)?;
        let csr = self.dir.join(format!("{name}.csr"));
        self.run(&[
            "req",
            "-new",
            "-key",
            &s(&pair.key),
            "-subj",
            subject,
            "-out",
            &s(&csr),
        ])?;
        let mut ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
        );
        if let Some(sans) = sans {
            ext.push_str(&format!("subjectAltName={sans}\n"));
        }
        let ext_file = self.dir.join(format!("{name}.ext"));
        write(&ext_file, &ext)?;
        self.run(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&ca.cert),
            "-CAkey",
            &s(&ca.key),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "3",
            "-extfile",
            &s(&ext_file),
            "-out",
            &s(&pair.cert),
        ])?;
        Ok(pair)
    }
}
