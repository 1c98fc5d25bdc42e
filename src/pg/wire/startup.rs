//! Opening a connection: TCP or Unix socket to each host in turn, TLS when
//! asked (`sslmode`), the startup message, authentication (trust, password,
//! md5, SCRAM-SHA-256) and the parameters the server reports.

use super::*;

impl WireClient {
    /// Opens a physical replication connection on the first host of
    /// `ci.targets()` that accepts it, with `sslmode` honoured as in
    /// `pg::connect::connect` (unix sockets never use TLS).
    /// `application_name` is used unless `ci` names one.
    ///
    /// SCRAM channel binding (`SCRAM-SHA-256-PLUS`) is not offered:
    /// `channel_binding=require` is refused with an error.
    pub async fn connect(ci: &ConnInfo, application_name: &str) -> Result<Self, WireError> {
        Self::connect_impl(ci, application_name, false, true).await
    }

    /// [`connect`](Self::connect), recording every byte read from the start
    /// (for capturing fixtures; see [`take_tap`](Self::take_tap)).
    #[cfg(test)]
    pub(crate) async fn connect_tapped(
        ci: &ConnInfo,
        application_name: &str,
    ) -> Result<Self, WireError> {
        Self::connect_impl(ci, application_name, true, true).await
    }

    pub(super) async fn connect_impl(
        ci: &ConnInfo,
        application_name: &str,
        tap: bool,
        replication: bool,
    ) -> Result<Self, WireError> {
        connect::check_supported(ci)?;
        for (keyword, bad) in [("channel_binding", "require"), ("sslnegotiation", "direct")] {
            if ci.other.get(keyword).map(String::as_str) == Some(bad) {
                return Err(ConnectError::Unsupported {
                    keyword,
                    value: bad.to_owned(),
                }
                .into());
            }
        }
        let targets = ci.targets();
        if targets.is_empty() {
            return Err(ConnectError::Settings {
                message: "no host to connect to (hint: set host= or PGHOST)".to_owned(),
            }
            .into());
        }
        let sslmode = ci.sslmode.unwrap_or(SslMode::Prefer);
        let tls = if sslmode != SslMode::Disable && targets.iter().any(|t| !t.is_unix_socket()) {
            Some(connect::tls_connector(ci, sslmode)?)
        } else {
            None
        };
        let timeout = ci.connect_timeout.filter(|t| !t.is_zero());
        let mut last = None;
        for target in &targets {
            let attempt = Self::connect_to(
                ci,
                target,
                tls.as_ref(),
                sslmode,
                application_name,
                tap,
                replication,
            );
            let result = match timeout {
                Some(t) => match tokio::time::timeout(t, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(WireError::from(ConnectError::Unreachable {
                        target: target.clone(),
                        error: io::Error::new(io::ErrorKind::TimedOut, "timed out"),
                    })),
                },
                None => attempt.await,
            };
            match result {
                Ok(client) => {
                    tracing::debug!(server = %target, version = %client.version, "connection open");
                    return Ok(client);
                }
                Err(e) if e.tries_next_host() => {
                    tracing::debug!(server = %target, error = %e, "trying the next host");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ConnectError::Settings {
                message: "no host to connect to".to_owned(),
            }
            .into()
        }))
    }

    pub(super) async fn connect_to(
        ci: &ConnInfo,
        target: &Target,
        tls: Option<&tokio_postgres_rustls::MakeRustlsConnect>,
        sslmode: SslMode,
        application_name: &str,
        tap: bool,
        replication: bool,
    ) -> Result<Self, WireError> {
        let unreachable = |error: io::Error| ConnectError::Unreachable {
            target: target.clone(),
            error,
        };
        let stream: Box<dyn Io> = if target.is_unix_socket() {
            Box::new(
                UnixStream::connect(target.to_string())
                    .await
                    .map_err(unreachable)?,
            )
        } else {
            let tcp = match target.hostaddr {
                Some(addr) => TcpStream::connect((addr, target.port)).await,
                None => TcpStream::connect((target.host.as_str(), target.port)).await,
            }
            .map_err(unreachable)?;
            // Small messages (status updates) must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            match tls {
                Some(tls) => Self::negotiate_tls(tcp, target, tls, sslmode).await?,
                None => Box::new(tcp),
            }
        };

        let user = ci.user.clone().unwrap_or_default();
        let mut client = WireClient {
            stream,
            server: target.clone(),
            user: user.clone(),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            params: HashMap::new(),
            version: ServerVersion(0),
            mode: Mode::Idle,
            pending: None,
            tap: tap.then(Vec::new),
        };

        let app = ci
            .application_name
            .clone()
            .unwrap_or_else(|| application_name.to_owned());
        let mut params: Vec<(&str, &str)> = vec![("user", &user)];
        if replication {
            params.push(("replication", "true"));
        }
        if let Some(db) = &ci.dbname {
            params.push(("database", db));
        }
        params.push(("application_name", &app));
        if let Some(options) = &ci.options {
            params.push(("options", options));
        }
        frontend::startup_message(params.iter().copied(), &mut client.wbuf)
            .map_err(|e| client.settings_error(e))?;
        let startup = async {
            client.send().await?;
            client.authenticate(ci.password_for(target), ci).await?;
            client.finish_startup().await
        };
        startup.await.map_err(|e| e.during_startup(target))?;
        Ok(client)
    }

    /// SSLRequest, then the TLS handshake if the server agrees.
    pub(super) async fn negotiate_tls(
        mut tcp: TcpStream,
        target: &Target,
        tls: &tokio_postgres_rustls::MakeRustlsConnect,
        sslmode: SslMode,
    ) -> Result<Box<dyn Io>, WireError> {
        let lost = |e: io::Error| ConnectError::ConnectionLost {
            target: target.clone(),
            message: e.to_string(),
        };
        let mut req = BytesMut::new();
        frontend::ssl_request(&mut req);
        tcp.write_all(&req).await.map_err(lost)?;
        let answer = tcp.read_u8().await.map_err(lost)?;
        match answer {
            b'S' => {
                let mut make = tls.clone();
                let connector =
                    MakeTlsConnect::<TcpStream>::make_tls_connect(&mut make, &target.host_name())
                        .map_err(|e| ConnectError::TlsSettings {
                        message: format!("invalid server name \"{}\": {e}", target.host_name()),
                    })?;
                let stream = TlsConnect::connect(connector, tcp).await.map_err(|e| {
                    let detail = e.to_string();
                    connect::tls_error(target, &detail, Some(&e))
                })?;
                Ok(Box::new(stream))
            }
            b'N' if sslmode >= SslMode::Require => Err(connect::tls_error(
                target,
                "server does not support TLS, but sslmode requires it",
                None,
            )
            .into()),
            b'N' => Ok(Box::new(tcp)),
            other => Err(ConnectError::Protocol {
                target: target.clone(),
                message: format!("answer {:?} to the TLS request", other as char),
            }
            .into()),
        }
    }

    pub(super) fn settings_error(&self, e: io::Error) -> WireError {
        ConnectError::Settings {
            message: format!("cannot encode the startup message: {e}"),
        }
        .into()
    }

    /// The authentication exchange, up to AuthenticationOk.
    pub(super) async fn authenticate(
        &mut self,
        password: Option<String>,
        ci: &ConnInfo,
    ) -> Result<(), WireError> {
        let user = self.user.clone();
        let need_password = |password: &Option<String>| -> Result<String, WireError> {
            password.clone().ok_or_else(|| WireError::Auth {
                user: user.clone(),
                message: format!("no password supplied for user \"{user}\""),
                hint: "the server asks for a password: set PGPASSWORD, add a line to ~/.pgpass, or put it in the connection string".to_owned(),
            })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = self.next_message().await?;
            match msg {
                BackendMessage::AuthenticationOk => return Ok(()),
                BackendMessage::AuthenticationCleartextPassword => {
                    let pw = need_password(&password)?;
                    frontend::password_message(pw.as_bytes(), &mut self.wbuf)
                        .map_err(|e| self.settings_error(e))?;
                    self.send().await?;
                }
                BackendMessage::AuthenticationMd5Password { salt } => {
                    let pw = need_password(&password)?;
                    let hash = md5_hash(self.user.as_bytes(), pw.as_bytes(), salt);
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                        .map_err(|e| self.settings_error(e))?;
                    self.send().await?;
                }
                BackendMessage::AuthenticationSasl { mechanisms } => {
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(WireError::Auth {
                            user: self.user.clone(),
                            message: format!(
                                "the server offers only SASL mechanisms pgtide does not support: {}",
                                mechanisms.join(", ")
                            ),
                            hint: "allow scram-sha-256 for this connection in pg_hba.conf".to_owned(),
                        });
                    }
                    let pw = need_password(&password)?;
                    // Without channel binding ("n,,"): pgtide cannot read the
                    // server certificate's hash through tokio-postgres-rustls.
                    let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.wbuf)
                        .map_err(|e| self.settings_error(e))?;
                    scram = Some(s);
                    self.send().await?;
                }
                BackendMessage::AuthenticationSaslContinue(data) => {
                    let Some(s) = scram.as_mut() else {
                        return Err(self.unexpected("AuthenticationSASLContinue", "authenticating"));
                    };
                    s.update(&data).map_err(|e| WireError::Auth {
                        user: self.user.clone(),
                        message: format!("SCRAM authentication failed: {e}"),
                        hint: "check the server's password_encryption and the role's password"
                            .to_owned(),
                    })?;
                    frontend::sasl_response(s.message(), &mut self.wbuf)
                        .map_err(|e| self.settings_error(e))?;
                    self.send().await?;
                }
                BackendMessage::AuthenticationSaslFinal(data) => {
                    let Some(s) = scram.as_mut() else {
                        return Err(self.unexpected("AuthenticationSASLFinal", "authenticating"));
                    };
                    s.finish(&data).map_err(|e| WireError::Auth {
                        user: self.user.clone(),
                        message: format!("the server's SCRAM proof is invalid: {e}"),
                        hint:
                            "the server may not be the one you meant to reach; check host and port"
                                .to_owned(),
                    })?;
                }
                BackendMessage::AuthenticationOther(code) => {
                    let method = match code {
                        2 => "Kerberos V5",
                        6 => "SCM credentials",
                        7 | 8 => "GSSAPI",
                        9 => "SSPI",
                        _ => "an unknown method",
                    };
                    return Err(WireError::Auth {
                        user: self.user.clone(),
                        message: format!("the server asks for {method} authentication (request {code}), which pgtide does not support"),
                        hint: "allow scram-sha-256, md5, password or trust for replication connections in pg_hba.conf".to_owned(),
                    });
                }
                BackendMessage::ErrorResponse(e) => return Err(self.startup_error(e, ci)),
                BackendMessage::NoticeResponse(n) => self.notice(&n),
                BackendMessage::NegotiateProtocolVersion { .. } => {}
                other => return Err(self.unexpected(&other.name(), "authenticating")),
            }
        }
    }

    /// After AuthenticationOk: parameters, then ReadyForQuery.
    pub(super) async fn finish_startup(&mut self) -> Result<(), WireError> {
        loop {
            match self.next_message().await? {
                BackendMessage::ParameterStatus { name, value } => {
                    self.params.insert(name, value);
                }
                BackendMessage::BackendKeyData { .. } => {}
                BackendMessage::NoticeResponse(n) => self.notice(&n),
                BackendMessage::ErrorResponse(e) => {
                    return Err(self.startup_error(e, &ConnInfo::default()))
                }
                BackendMessage::ReadyForQuery { .. } => break,
                other => return Err(self.unexpected(&other.name(), "starting up")),
            }
        }
        let reported = self
            .params
            .get("server_version")
            .cloned()
            .unwrap_or_default();
        self.version = ServerVersion::parse(&reported).ok_or_else(|| {
            WireError::Protocol(ProtoError::malformed(
                "server_version parameter",
                format!("{reported:?}"),
            ))
        })?;
        Ok(())
    }
}
