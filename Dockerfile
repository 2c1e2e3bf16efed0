# The golive image: what every step of a golive Kubeflow pipeline runs in (CPU).
#
#   docker build -t registry.example.com/golive:0.1.0 .
#   docker push registry.example.com/golive:0.1.0
#   golive pipeline compile job.yaml -o pipeline.yaml --image registry.example.com/golive:0.1.0
#
# torch comes from PyTorch's CPU index (PyPI's default wheel carries CUDA libraries a CPU node does not
# need); constraints.txt pins the same version the tests run with.
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 GOLIVE_HOME=/tmp/golive
WORKDIR /opt/golive
COPY constraints.txt pyproject.toml README.md ./
COPY src ./src
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt '.[all]' \
 && python -c "import golive, kfp, onnxruntime; print('golive', golive.__version__)"
# models a pipeline converts must be reachable from the pod: baked in below /models, on a mounted volume,
# or shipped in an installed package (pkg:NAME/path)
WORKDIR /work
