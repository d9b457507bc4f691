//! The plugin's side of the lean framed transport (docs/process-protocol.md, "Framed"):
//! length-prefixed protobuf frames multiplexed by call id on the plugin socket, answered by
//! the same `PluginService` implementation the gRPC server uses.

use std::sync::Arc;

use plugbay_proto::plugin::v1::plugin_service_server::PluginService;
use plugbay_proto::prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{Mutex, watch};

use super::{MAX_MESSAGE_BYTES, Service};
use crate::Plugin;

const HEADER: usize = 17;
const REPLY_OK: u8 = 0x80;
const REPLY_ERROR: u8 = 0x81;

/// Serves connections until the plugin is asked to shut down.
pub(super) async fn serve<P: Plugin>(
    listener: UnixListener,
    service: Arc<Service<P>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(connection(stream, service.clone())); }
                Err(_) => return,
            },
            _ = stopped.wait_for(|stop| *stop) => {
                // Let the Shutdown reply reach the host before the process exits.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                return;
            }
        }
    }
}

async fn connection<P: Plugin>(stream: tokio::net::UnixStream, service: Arc<Service<P>>) {
    let (mut reader, writer) = stream.into_split();
    let writer = Arc::new(Mutex::new(writer));
    loop {
        let mut header = [0u8; HEADER];
        if reader.read_exact(&mut header).await.is_err() {
            return;
        }
        let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let kind = header[4];
        let id = u64::from_le_bytes(header[5..13].try_into().expect("8 bytes"));
        if length > MAX_MESSAGE_BYTES {
            return;
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let (service, writer) = (service.clone(), writer.clone());
        tokio::spawn(async move {
            // A panic in a handler must still answer the host: run it as a task of its own.
            let handled = tokio::spawn(async move { dispatch(&*service, kind, &body).await }).await;
            let handled = handled.unwrap_or_else(|error| {
                Err(tonic::Status::internal(format!("the plugin panicked while serving a request: {error}")))
            });
            let (reply_kind, reply) = match handled {
                Ok(reply) => (REPLY_OK, reply),
                Err(status) => {
                    let mut reply = (status.code() as i32).to_le_bytes().to_vec();
                    reply.extend_from_slice(status.message().as_bytes());
                    (REPLY_ERROR, reply)
                }
            };
            let mut frame = Vec::with_capacity(HEADER + reply.len());
            frame.extend_from_slice(&(reply.len() as u32).to_le_bytes());
            frame.push(reply_kind);
            frame.extend_from_slice(&id.to_le_bytes());
            frame.extend_from_slice(&0u32.to_le_bytes());
            frame.extend_from_slice(&reply);
            let _ = writer.lock().await.write_all(&frame).await;
        });
    }
}

/// Decodes a request, runs it through the `PluginService` implementation, encodes the reply.
async fn dispatch<S: PluginService>(service: &S, kind: u8, body: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    fn decode<T: Message + Default>(body: &[u8]) -> Result<tonic::Request<T>, tonic::Status> {
        T::decode(body)
            .map(tonic::Request::new)
            .map_err(|error| tonic::Status::invalid_argument(format!("malformed request: {error}")))
    }
    let reply = match kind {
        1 => service.describe(decode(body)?).await?.into_inner().encode_to_vec(),
        2 => service.init(decode(body)?).await?.into_inner().encode_to_vec(),
        3 => service.call(decode(body)?).await?.into_inner().encode_to_vec(),
        4 => service.on_event(decode(body)?).await?.into_inner().encode_to_vec(),
        5 => service.shutdown(decode(body)?).await?.into_inner().encode_to_vec(),
        6 => service.snapshot(decode(body)?).await?.into_inner().encode_to_vec(),
        7 => service.restore(decode(body)?).await?.into_inner().encode_to_vec(),
        other => return Err(tonic::Status::unimplemented(format!("unknown request kind {other}"))),
    };
    Ok(reply)
}
