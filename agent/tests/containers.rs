//! Containers through the real Podman Docker API (`NAP_TEST_CONTAINER_SOCKET`,
//! set up by .ci/run), and the size of a telemetry message for a host with
//! five containers.

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use nap_agent::config::{ApplicationConfig, ContainerConfig, HealthConfig};
use nap_agent::telemetry::Sampler;
use nap_core::wire::{AgentMessage, CheckStatus, ContainerState, Telemetry};

const IMAGE: &str = "localhost/nap-busybox:latest";

#[tokio::test]
async fn five_running_containers_are_reported_compactly() {
    let Ok(socket) = std::env::var("NAP_TEST_CONTAINER_SOCKET") else {
        assert!(
            std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
            "NAP_TEST_CONTAINER_SOCKET is required"
        );
        eprintln!(
            "SKIPPED the container test: set NAP_TEST_CONTAINER_SOCKET (see .ci/run for Podman)"
        );
        return;
    };
    let docker = Docker::connect_with_unix(&socket, 30, bollard::API_DEFAULT_VERSION)
        .expect("socket")
        .negotiate_version()
        .await
        .expect("negotiated");
    let names: Vec<String> = (1..=5).map(|i| format!("nap-test-web-{i}")).collect();
    for name in &names {
        let _ = docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                ContainerCreateBody {
                    image: Some(IMAGE.into()),
                    cmd: Some(vec!["/bin/sleep".into(), "600".into()]),
                    ..Default::default()
                },
            )
            .await
            .expect("create");
        docker.start_container(name, None).await.expect("start");
    }

    let mut sampler = Sampler::new(
        ContainerConfig {
            socket: Some(socket.clone()),
        },
        ApplicationConfig::default(),
    )
    .expect("sampler");
    let sample = sampler.sample().await;
    assert_eq!(sample.containers_unavailable, None);
    for name in &names {
        let c = sample
            .containers
            .iter()
            .find(|c| &c.name == name)
            .unwrap_or_else(|| panic!("{name} is reported: {:?}", sample.containers));
        assert_eq!(c.state, ContainerState::Running);
        assert_eq!(c.image, IMAGE);
        assert_eq!(c.id.len(), 12);
    }

    // The health check sees them; a missing one is critical.
    let mut config = HealthConfig {
        containers: names.clone(),
        ..HealthConfig::default()
    };
    let (checks, _) = nap_agent::health::check(&config, &sample).await;
    assert_eq!(checks.containers, CheckStatus::Ok);
    config.containers.push("nap-test-absent".into());
    let (checks, details) = nap_agent::health::check(&config, &sample).await;
    assert_eq!(checks.containers, CheckStatus::Critical);
    assert!(
        details
            .containers
            .expect("detail")
            .message
            .contains("nap-test-absent")
    );

    // The bytes on the wire for this host's sample with its five containers.
    let mut only_five = sample.clone();
    only_five.containers.retain(|c| names.contains(&c.name));
    let message = AgentMessage::Telemetry(Telemetry {
        node_id: nap_core::NodeId::from_u128(1),
        timestamp: nap_core::WallTime::from(chrono::Utc::now()),
        data: only_five,
        dropped_samples: 0,
    });
    let bytes = nap_core::encode(&message).expect("encode").len();
    eprintln!("MEASURED telemetry message with 5 containers: {bytes} bytes");
    assert!(bytes < 4096, "{bytes} bytes");

    for name in &names {
        let _ = docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
}

#[tokio::test]
async fn without_an_engine_containers_are_unavailable_not_an_error() {
    let mut sampler = Sampler::new(
        ContainerConfig {
            socket: Some("unix:///nonexistent/docker.sock".into()),
        },
        ApplicationConfig::default(),
    )
    .expect("sampler");
    let sample = sampler.sample().await;
    assert!(sample.containers.is_empty());
    let reason = sample.containers_unavailable.expect("a reason");
    assert!(reason.contains("/nonexistent/docker.sock"), "{reason}");
}
