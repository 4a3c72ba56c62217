//! Certificates and password files for the tests of a fleet on a secured etcd, made by the
//! test (rcgen): a CA for etcd and the nodes, and a stranger CA that signed nothing etcd
//! trusts.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::etcd::TlsFiles;

/// The certificates and keys of the test, as PEM files in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA (`ca.pem`), etcd's certificate for 127.0.0.1 signed by it (`etcd.pem`), a node's
    /// client certificate signed by it (`node.pem`), and a stranger CA (`stranger-ca.pem`)
    /// with a client certificate of its own (`stranger.pem`); each key beside its
    /// certificate (`*-key.pem`).
    pub fn make() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir for the certificates");
        let write =
            |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write a PEM file");
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>, names: Vec<String>, common_name: &str, file: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, common_name);
            let cert = params.signed_by(&key, issuer).unwrap();
            write(&format!("{file}.pem"), cert.pem());
            write(&format!("{file}-key.pem"), key.serialize_pem());
        };
        let (ca_cert, trusted) = ca("tcp-redirs test CA");
        write("ca.pem", ca_cert.pem());
        leaf(&trusted, vec!["127.0.0.1".into(), "localhost".into()], "etcd", "etcd");
        leaf(&trusted, vec![], "gateway", "node");
        let (stranger_cert, stranger) = ca("a stranger CA");
        write("stranger-ca.pem", stranger_cert.pem());
        leaf(&stranger, vec![], "gateway", "stranger");
        Pki { dir }
    }

    /// The path of one of the files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What etcd serves and trusts.
    pub fn etcd_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.path("etcd.pem"),
            key: self.path("etcd-key.pem"),
            client_ca: self.path("ca.pem"),
        }
    }

    /// The `serve` flags of a node that trusts the CA and shows its own certificate.
    pub fn node_args(&self) -> Vec<String> {
        let path = |name: &str| self.path(name).display().to_string();
        [
            "--store-ca",
            &path("ca.pem"),
            "--store-cert",
            &path("node.pem"),
            "--store-key",
            &path("node-key.pem"),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// A password file, in the same directory, holding `password`.
    pub fn password_file(&self, name: &str, password: &str) -> PathBuf {
        password_file(self.dir.path(), name, password)
    }
}

/// A password file named `name` in `dir`, holding `password`.
pub fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).expect("write the password file");
    path
}
