//! Binding: the bind PDUs checked against the account (its password,
//! address, state, bind types and `max_binds` across workers) and
//! answered with the status that says why not.

use super::*;

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    pub(super) async fn bind(
        &mut self,
        sequence: u32,
        bind_type: BindType,
        system_id: &str,
        password: &str,
        version: InterfaceVersion,
    ) -> std::io::Result<()> {
        let version = u8::from(version);
        let outcome = if self.bind.is_some() {
            Err((CommandStatus::EsmeRalybnd, "already bound".to_owned()))
        } else {
            self.authenticate(bind_type, system_id, password, version)
                .await
        };
        let status = match outcome {
            Ok(bind) => {
                tracing::info!(account = %bind.account.name, peer = %self.peer, bind_type = bind_type.as_str(),
                    "smpp server: bound");
                if bind_type.receives() {
                    self.deliveries = Some(Deliveries::new(
                        self.ctx.pool.clone(),
                        self.ctx.worker.clone(),
                        bind.account.clone(),
                        self.ctx.receipts.subscribe(),
                    ));
                }
                self.bind = Some((bind, bind_type));
                CommandStatus::EsmeRok
            }
            Err((status, reason)) => {
                tracing::info!(peer = %self.peer, system_id, ?status, "smpp server: bind refused: {reason}");
                ::metrics::counter!(metrics::SMPP_SERVER_BIND_REFUSALS, "status" => format!("{status:?}")).increment(1);
                if matches!(
                    status,
                    CommandStatus::EsmeRinvpaswd | CommandStatus::EsmeRinvsysid
                ) {
                    tokio::time::sleep(REFUSED_BIND_DELAY).await;
                }
                status
            }
        };
        // 3.3 clients get no TLVs (SMPP 3.4 §5.3.2.25: sc_interface_version
        // is for 3.4 and later).
        let sc_version = (version >= 0x34).then_some(InterfaceVersion::Smpp3_4);
        let id = COctetString::from_str(SYSTEM_ID).expect("a valid system_id");
        let pdu: Pdu = match bind_type {
            BindType::Transmitter => BindTransmitterResp::builder()
                .system_id(id)
                .sc_interface_version(sc_version)
                .build()
                .into(),
            BindType::Receiver => BindReceiverResp::builder()
                .system_id(id)
                .sc_interface_version(sc_version)
                .build()
                .into(),
            BindType::Transceiver => BindTransceiverResp::builder()
                .system_id(id)
                .sc_interface_version(sc_version)
                .build()
                .into(),
        };
        self.send(Command::new(status, sequence, pdu)).await
    }

    async fn authenticate(
        &self,
        bind_type: BindType,
        system_id: &str,
        password: &str,
        version: u8,
    ) -> Result<Arc<Bind>, (CommandStatus, String)> {
        let version_name = match version {
            0x50.. => "5.0",
            0x34 => "3.4",
            _ => "3.3",
        };
        let settings = &self.ctx.settings;
        if !settings
            .interface_versions
            .iter()
            .any(|v| v == version_name)
        {
            return Err((
                CommandStatus::EsmeRbindfail,
                format!(
                    "interface version {version_name} is not accepted on {}",
                    settings.name
                ),
            ));
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!("smpp server: cannot check a bind: {e}");
            (
                CommandStatus::EsmeRsyserr,
                "the database is unavailable".to_owned(),
            )
        };
        let client = self.ctx.pool.get().await.map_err(|e| unavailable(&e))?;
        let account =
            account::authenticate(&client, system_id, password, bind_type, self.peer.ip())
                .await
                .map_err(|e| unavailable(&e))?
                .map_err(|r| (r.status, r.reason))?;
        drop(client);
        self.ctx
            .binds
            .open(account, &settings.name, bind_type, version_name, self.peer)
            .await
            .map_err(|e| match e {
                OpenError::TooMany(_) => (CommandStatus::EsmeRbindfail, e.to_string()),
                other => unavailable(&other),
            })
    }
}
