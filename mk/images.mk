# Images: Dockerfile.worker and Dockerfile.operator, built with buildah and run with
# podman (no Docker engine, no registry).  See docs/images.md.
#
# Nothing can be pulled here, so the base images come from a Debian debootstrap
# (cached under $(W5XDE_CACHE)/images) and are passed as BASE_IMAGE / BUILD_IMAGE.
# Python dependencies come from a wheelhouse that pip fills on the host: the build
# itself never needs the network.

IMAGES_CACHE := $(W5XDE_CACHE)/images
# One storage for buildah, podman and the tests, apart from any system storage.
IMAGES_STORAGE := --root $(IMAGES_CACHE)/storage --runroot /run/w5xde-containers --storage-driver overlay
BUILDAH := buildah $(IMAGES_STORAGE)
# --log-level=error: podman warns about its unused CNI config on every call.
PODMAN := podman --log-level=error $(IMAGES_STORAGE) --runtime runc --cgroup-manager cgroupfs

IMAGE_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_REGISTRY ?= localhost
IMAGE_TAG ?= $(IMAGE_VERSION)
WORKER_IMAGE ?= $(IMAGE_REGISTRY)/w5xde-worker:$(IMAGE_TAG)
OPERATOR_IMAGE ?= $(IMAGE_REGISTRY)/w5xde-operator:$(IMAGE_TAG)
IMAGE_SOURCE ?= https://github.com/w5xde/w5xde
BASE_IMAGE ?= localhost/w5xde-base:bookworm
BUILD_IMAGE ?= localhost/w5xde-build:bookworm
WHEELHOUSE := .images/wheelhouse
IMAGES_TOOLS := buildah podman runc debootstrap newuidmap

TEST_PREREQUISITES += images

.PHONY: images images-tools images-base wheelhouse images-push images-sizes images-test images-clean

images-tools: ## install buildah, podman, runc, debootstrap (apt, only when missing)
	@missing=""; for tool in $(IMAGES_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		echo "images-tools: installing buildah podman runc debootstrap uidmap"; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
			--no-install-recommends buildah podman runc debootstrap uidmap netavark \
			fuse-overlayfs iproute2 ca-certificates >/dev/null; \
	fi

images-base: images-tools ## debootstrap the base images once (cached in $(W5XDE_CACHE)/images)
	@BASE_IMAGE=$(BASE_IMAGE) BUILD_IMAGE=$(BUILD_IMAGE) tests/images/build-base.sh

$(WHEELHOUSE)/.requirements: pyproject.toml | install
	@mkdir -p $(WHEELHOUSE)
	@$(BIN)/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['project']['dependencies'] + p['build-system']['requires']))" >$@.new
	@if ! cmp -s $@.new $@ || [ -z "$$(ls $(WHEELHOUSE)/*.whl 2>/dev/null)" ]; then \
		echo "wheelhouse: downloading the dependency wheels into $(WHEELHOUSE)"; \
		rm -rf $(WHEELHOUSE).new && mkdir -p $(WHEELHOUSE).new && \
		$(BIN)/pip download --quiet --disable-pip-version-check --only-binary :all: \
			--python-version 3.11 --dest $(WHEELHOUSE).new -r $@.new && \
		mv $@.new $(WHEELHOUSE).new/.requirements && rm -rf $(WHEELHOUSE) && mv $(WHEELHOUSE).new $(WHEELHOUSE); \
	else rm -f $@.new; touch $@; fi

wheelhouse: $(WHEELHOUSE)/.requirements ## download the images' dependency wheels (the build itself is offline)

images: images-base wheelhouse ## build both images (skipped when inputs are unchanged; IMAGES_FROM=HEAD builds a commit)
	@BUILDAH="$(BUILDAH)" BASE_IMAGE=$(BASE_IMAGE) BUILD_IMAGE=$(BUILD_IMAGE) \
		WORKER_IMAGE=$(WORKER_IMAGE) OPERATOR_IMAGE=$(OPERATOR_IMAGE) VERSION=$(IMAGE_VERSION) \
		SOURCE=$(IMAGE_SOURCE) WHEELHOUSE=$(WHEELHOUSE) IMAGES_FROM=$(IMAGES_FROM) \
		tests/images/build-images.sh

images-sizes: ## print the sizes of the built images
	@$(PODMAN) images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'w5xde-(worker|operator|base|build)' | sort

images-push: ## push both images: make images-push IMAGE_REGISTRY=registry.example.com/team [PUSH_FLAGS=--creds=...]
	@test "$(IMAGE_REGISTRY)" != localhost || { echo "images-push: set IMAGE_REGISTRY=<your registry>/<path>" >&2; exit 2; }
	$(BUILDAH) push $(PUSH_FLAGS) $(WORKER_IMAGE) docker://$(WORKER_IMAGE)
	$(BUILDAH) push $(PUSH_FLAGS) $(OPERATOR_IMAGE) docker://$(OPERATOR_IMAGE)

images-test: install images ## only the images tier: build, then smoke-test with podman
	$(BIN)/pytest -m images $(PYTEST_ARGS)

images-clean: ## remove the images' storage and wheelhouse (the debootstrap tarballs stay)
	-$(PODMAN) system reset --force >/dev/null 2>&1
	rm -rf $(IMAGES_CACHE)/storage $(WHEELHOUSE)
