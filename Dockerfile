# CPU image for igkd: JupyterLab on port 8888, as Binder runs it (non-root user, uid 1000).
#   docker build -t igkd . && docker run -p 8888:8888 -v "$PWD/data:/home/jovyan/igkd/data" igkd
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends make git \
    && rm -rf /var/lib/apt/lists/*

ARG NB_USER=jovyan
ARG NB_UID=1000
RUN useradd -m -u ${NB_UID} ${NB_USER}
ENV HOME=/home/${NB_USER} PATH=/home/${NB_USER}/.local/bin:${PATH}
USER ${NB_USER}
WORKDIR ${HOME}/igkd

# CPU wheels of torch first (the default PyPI wheel bundles CUDA, several GB), then `make setup`,
# the README's install step.
RUN pip install --user --no-cache-dir torch==2.14.1 torchvision==0.29.1 \
        --index-url https://download.pytorch.org/whl/cpu
COPY --chown=${NB_USER} . .
# As a non-root user pip installs into ~/.local ("site-packages is not writeable").
RUN make setup

EXPOSE 8888
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"]
