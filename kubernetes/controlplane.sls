# -*- coding: utf-8 -*-
# vim: ft=sls
{#- The control plane of a master, as static pods the kubelet runs:
    kube-apiserver, kube-controller-manager and kube-scheduler, wired to the
    certificates kubernetes.certs.present lays down, their kubeconfigs, an
    admin kubeconfig for kubectl, and the service-account key pair when pillar
    gives one.  On a node (kubernetes:role: node) the same files are made
    absent, so a master that becomes a node stops running a control plane.

    Every manifest carries the SHA-256 of the certificates it uses as an
    annotation: when they are replaced, the manifest changes and the kubelet
    recreates the pod with the new files. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes, node with context %}
{%- if node.errors %}
{{-  raise(node.errors | join('; ')) }}
{%- endif %}
{%- set files = kubernetes.files %}
{%- set sa = node.service_account %}
{%- set manifests = kubernetes.manifests %}
{%- set components = {
      'apiserver': 'kube-apiserver',
      'controller_manager': 'kube-controller-manager',
      'scheduler': 'kube-scheduler',
    } %}

include:
  - {{ tplroot }}.certs.present
{%- if node.master %}
{%-   set ca = files['ca.crt'].path %}
{%-   set kubecfg_crt = files['kubecfg.crt'].path %}
{%-   set kubecfg_key = files['kubecfg.key'].path %}
{%-   set certs_pillar = salt['pillar.get'](kubernetes.pillar, {}) %}
{%-   set sa_pillar = salt['pillar.get'](kubernetes.service_account.pillar, {}) %}
{#-   The certificates in use (no keys: each key belongs to one of them). #}
{%-   set used = [certs_pillar['ca.crt'], certs_pillar['server.cert'], certs_pillar['kubecfg.crt']] %}
{%-   if sa.dedicated %}
{%-     do used.append(sa_pillar['sa.pub']) %}
{%-   endif %}
{%-   set annotations = {'kubernetes-formula/certificates-sha256': salt['hashutil.digest'](used | join('\n'), 'sha256')} %}
{%-   set certs_mount = {'name': 'k8s-certs', 'path': kubernetes.certs.dir, 'type': 'Directory'} %}

{#- The service-account pair: checked before anything is written (the
    certificate check waits for it), laid down like the certificates. #}
{%-   if sa.dedicated %}

kubernetes-controlplane-service-account-validated:
  k8s_node.key_pair_validated:
    - name: {{ kubernetes.service_account.pillar | json }}
    - require_in:
      - k8s_certs: kubernetes-certs-pillar-validated
{%-   endif %}
{%-   for id, file in sa.files | dictsort %}
{%-     if sa.dedicated %}

kubernetes-controlplane-{{ id | replace('.', '-') }}-pem-managed:
  k8s_certs.pem_managed:
    - name: {{ file.path | json }}
    - source: {{ (kubernetes.service_account.pillar ~ ':' ~ file.pillar) | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '{{ file.mode }}'
    - makedirs: True
    - dir_mode: '{{ kubernetes.certs.dir_mode }}'
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated
      - file: kubernetes-certs-dir-file-directory
{%-     else %}

kubernetes-controlplane-{{ id | replace('.', '-') }}-file-absent:
  file.absent:
    - name: {{ file.path | json }}
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated
{%-     endif %}
{%-   endfor %}

{#- A symlink planted at a destination would send the write wherever it points
    (the service-account pair's pem_managed refuses one by itself). #}
{%-   set destinations = [kubernetes.admin.kubeconfig, kubernetes.controller_manager.kubeconfig,
                          kubernetes.scheduler.kubeconfig] %}
{%-   for name in components.values() %}
{%-     do destinations.append(manifests.dir ~ '/' ~ name ~ '.yaml') %}
{%-   endfor %}

kubernetes-controlplane-destinations-no-symlinks:
  k8s_certs.no_symlinks:
    - name: control-plane files
    - paths: {{ destinations | json }}
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated

{#- Kubeconfigs: kubectl's through the cluster's address, the controller
    manager's and the scheduler's through their own apiserver. #}
{%-   for id, path, server in [
        ('admin', kubernetes.admin.kubeconfig, node.api_url),
        ('controller-manager', kubernetes.controller_manager.kubeconfig, node.local_api_url),
        ('scheduler', kubernetes.scheduler.kubeconfig, node.local_api_url),
      ] %}

kubernetes-controlplane-{{ id }}-kubeconfig-file-managed:
  file.managed:
    - name: {{ path | json }}
    - source: salt://{{ tplroot }}/files/kubeconfig.yaml.jinja
    - template: jinja
    - context:
        cluster: {{ node.cluster_name | json }}
        server: {{ server | json }}
        server_name: {{ kubernetes.api_server.fqdn | json }}
        ca: {{ ca | json }}
        user: {{ id | json }}
        cert: {{ kubecfg_crt | json }}
        key: {{ kubecfg_key | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '{{ kubernetes.kubeconfig_mode }}'
    - makedirs: True
    - dir_mode: '{{ kubernetes.certs.dir_mode }}'
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated
      - k8s_certs: kubernetes-controlplane-destinations-no-symlinks
{%-   endfor %}

{#- The static pods' flags: the formula's, then extra_args over them
    (a null value drops a flag). #}
{%-   set flags = {
        'apiserver': {
          'allow-privileged': 'true',
          'authorization-mode': 'Node,RBAC',
          'client-ca-file': ca,
          'enable-admission-plugins': 'NodeRestriction',
          'etcd-servers': kubernetes.apiserver.etcd_servers,
          'kubelet-client-certificate': kubecfg_crt,
          'kubelet-client-key': kubecfg_key,
          'secure-port': kubernetes.apiserver.secure_port,
          'service-account-issuer': sa.issuer,
          'service-account-key-file': sa.verify_key,
          'service-account-signing-key-file': sa.signing_key,
          'service-cluster-ip-range': kubernetes.service_cluster_ip_range,
          'tls-cert-file': files['server.cert'].path,
          'tls-private-key-file': files['server.key'].path,
        },
        'controller_manager': {
          'authentication-kubeconfig': kubernetes.controller_manager.kubeconfig,
          'authorization-kubeconfig': kubernetes.controller_manager.kubeconfig,
          'bind-address': '127.0.0.1',
          'client-ca-file': ca,
          'cluster-name': node.cluster_name,
          'kubeconfig': kubernetes.controller_manager.kubeconfig,
          'leader-elect': 'true',
          'root-ca-file': ca,
          'secure-port': kubernetes.controller_manager.secure_port,
          'service-account-private-key-file': sa.signing_key,
          'service-cluster-ip-range': kubernetes.service_cluster_ip_range,
          'use-service-account-credentials': 'true',
        },
        'scheduler': {
          'authentication-kubeconfig': kubernetes.scheduler.kubeconfig,
          'authorization-kubeconfig': kubernetes.scheduler.kubeconfig,
          'bind-address': '127.0.0.1',
          'client-ca-file': ca,
          'kubeconfig': kubernetes.scheduler.kubeconfig,
          'leader-elect': 'true',
          'secure-port': kubernetes.scheduler.secure_port,
        },
      } %}
{%-   if kubernetes.apiserver.advertise_address %}
{%-     do flags.apiserver.update({'advertise-address': kubernetes.apiserver.advertise_address}) %}
{%-   endif %}
{%-   set pods = {
        'apiserver': {'port': kubernetes.apiserver.secure_port, 'probe': '/livez', 'cpu': '250m',
                      'mounts': [certs_mount]},
        'controller_manager': {'port': kubernetes.controller_manager.secure_port, 'probe': '/healthz',
                               'cpu': '200m', 'mounts': [certs_mount,
                               {'name': 'kubeconfig', 'path': kubernetes.controller_manager.kubeconfig, 'type': 'File'}]},
        'scheduler': {'port': kubernetes.scheduler.secure_port, 'probe': '/healthz', 'cpu': '100m',
                      'mounts': [certs_mount,
                      {'name': 'kubeconfig', 'path': kubernetes.scheduler.kubeconfig, 'type': 'File'}]},
      } %}

kubernetes-controlplane-manifests-dir-file-directory:
  file.directory:
    - name: {{ manifests.dir | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - dir_mode: '{{ manifests.dir_mode }}'
    - makedirs: True
{%-   for component, name in components | dictsort %}
{%-     set merged = salt['slsutil.merge'](flags[component], kubernetes[component].extra_args) %}
{%-     set kept = {} %}
{%-     for flag, value in merged | dictsort %}
{%-       if value is not none %}
{%-         do kept.update({flag: value}) %}
{%-       endif %}
{%-     endfor %}

kubernetes-controlplane-{{ name }}-manifest-file-managed:
  file.managed:
    - name: {{ (manifests.dir ~ '/' ~ name ~ '.yaml') | json }}
    - source: salt://{{ tplroot }}/files/static-pod.yaml.jinja
    - template: jinja
    - context:
        name: {{ name | json }}
        image: {{ node.images[component] | json }}
        flags: {{ kept | json }}
        port: {{ pods[component].port | json }}
        probe: {{ pods[component].probe | json }}
        cpu: {{ pods[component].cpu | json }}
        mounts: {{ pods[component].mounts | json }}
        annotations: {{ annotations | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '{{ manifests.mode }}'
    - require:
      - file: kubernetes-controlplane-manifests-dir-file-directory
      - k8s_certs: kubernetes-certs-pillar-validated
      - k8s_certs: kubernetes-controlplane-destinations-no-symlinks
{%-     if component != 'apiserver' %}
      - file: kubernetes-controlplane-{{ component | replace('_', '-') }}-kubeconfig-file-managed
{%-     endif %}
{%-   endfor %}
{%- else %}
{#- A node: no control plane, no service-account pair. #}
{%-   for id, path in [
        ('kube-apiserver-manifest', manifests.dir ~ '/kube-apiserver.yaml'),
        ('kube-controller-manager-manifest', manifests.dir ~ '/kube-controller-manager.yaml'),
        ('kube-scheduler-manifest', manifests.dir ~ '/kube-scheduler.yaml'),
        ('admin-kubeconfig', kubernetes.admin.kubeconfig),
        ('controller-manager-kubeconfig', kubernetes.controller_manager.kubeconfig),
        ('scheduler-kubeconfig', kubernetes.scheduler.kubeconfig),
        ('sa-key', sa.files['sa.key'].path),
        ('sa-pub', sa.files['sa.pub'].path),
      ] %}

kubernetes-controlplane-{{ id }}-file-absent:
  file.absent:
    - name: {{ path | json }}
{%-   endfor %}
{%- endif %}
