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
    recreates the pod with the new files.

    On a master of a kubeadm-profile set (pillar kubernetes:kubeadm_pki) the
    static pods are kubeadm's four, etcd included, wired to the files
    kubernetes.kubeadm.present lays down under /etc/kubernetes (which owns
    them all: the kubeconfigs, the CAs, sa.key/sa.pub); this state writes only
    the manifests, each with the digest of the certificates that pod reads. #}
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
{%- set layout = node.layout %}
{%- if node.profile == 'kubeadm' %}
{%-   do components.update({'etcd': 'etcd'}) %}
{%- endif %}
{#- Per component: more flags (extra_args), the states its manifest requires,
    its annotations; filled by the layout's block below. #}
{%- set extra_args = {} %}
{%- set pod_requires = {} %}
{%- set pod_annotations = {} %}
{#- Per component, the enrolled certificates it reads: renewed on this host
    during the run, so their digest is taken when the manifest is written
    (the template reads them) and a renewal recreates the pod. #}
{%- set pod_enrolled = {} %}
{%- set enrolled_state = 'kubernetes-certs-enrolled-%s-certificate-enrolled' %}
{%- for component in components %}
{%-   do extra_args.update({component: kubernetes.kubeadm.etcd.extra_args if component == 'etcd'
                                      else kubernetes[component].extra_args}) %}
{%- endfor %}

include:
  - {{ tplroot }}.{{ layout.certs_sls }}
{%- for sls in layout.more_sls %}
  - {{ tplroot }}.{{ sls }}
{%- endfor %}
{%- if node.master and node.profile == 'seed' %}
{%-   set ca = files['ca.crt'].path %}
{%-   set kubecfg_crt = files['kubecfg.crt'].path %}
{%-   set kubecfg_key = files['kubecfg.key'].path %}
{%-   set certs_pillar = salt['pillar.get'](kubernetes.pillar, {}) %}
{%-   set sa_pillar = salt['pillar.get'](kubernetes.service_account.pillar, {}) %}
{#-   The certificates in use (no keys: each key belongs to one of them). #}
{%-   if layout.enrolled %}
{#-     The apiserver's pair is enrolled here: its digest is read when the manifest is written. #}
{%-     set used = [certs_pillar['ca.crt'], certs_pillar['kubecfg.crt']] %}
{%-     do pod_enrolled.update({'apiserver': [('apiserver', files['server.cert'].path)]}) %}
{%-   else %}
{%-     set used = [certs_pillar['ca.crt'], certs_pillar['server.cert'], certs_pillar['kubecfg.crt']] %}
{%-   endif %}
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
      - {{ layout.validated | json }}
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
      - {{ layout.validated | json }}
{%-       if not layout.enrolled %}
      - file: kubernetes-certs-dir-file-directory
{%-       endif %}
{%-     else %}

kubernetes-controlplane-{{ id | replace('.', '-') }}-file-absent:
  file.absent:
    - name: {{ file.path | json }}
    - require:
      - {{ layout.validated | json }}
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
      - {{ layout.validated | json }}

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
      - {{ layout.validated | json }}
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
{%-   for component in components %}
{%-     set requires = [layout.validated,
                        {'k8s_certs': 'kubernetes-controlplane-destinations-no-symlinks'}] %}
{%-     if component != 'apiserver' %}
{%-       do requires.append({'file': 'kubernetes-controlplane-' ~ component | replace('_', '-') ~ '-kubeconfig-file-managed'}) %}
{%-     endif %}
{%-     do pod_requires.update({component: requires}) %}
{%-     do pod_annotations.update({component: annotations}) %}
{%-   endfor %}
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

{%- elif node.master %}
{#- kubeadm's control plane: its flags and mounts (kubeadm v1.32's manifests,
    without the options that need settings this formula does not have). #}
{%-   set dir = node.kubeadm.dir %}
{%-   set pki = node.kubeadm.pki %}
{%-   set etcd = kubernetes.kubeadm.etcd %}
{%-   set given = salt['pillar.get'](kubernetes.kubeadm.pillar ~ ':files', {}) %}
{%-   set given = given if given is mapping else {} %}
{%-   set enrolled_files = salt['pillar.get'](kubernetes.kubeadm.pillar ~ ':enrolled', []) if layout.enrolled else [] %}
{%-   set destinations = [] %}
{%-   for name in components.values() %}
{%-     do destinations.append(manifests.dir ~ '/' ~ name ~ '.yaml') %}
{%-   endfor %}

kubernetes-controlplane-destinations-no-symlinks:
  k8s_certs.no_symlinks:
    - name: control-plane files
    - paths: {{ destinations | json }}
    - require:
      - {{ layout.validated | json }}
{%-   set flags = {
        'apiserver': {
          'advertise-address': kubernetes.apiserver.advertise_address or node.kubeadm.ip,
          'allow-privileged': 'true',
          'authorization-mode': 'Node,RBAC',
          'client-ca-file': pki ~ '/ca.crt',
          'enable-admission-plugins': 'NodeRestriction',
          'enable-bootstrap-token-auth': 'true',
          'etcd-cafile': pki ~ '/etcd/ca.crt',
          'etcd-certfile': pki ~ '/apiserver-etcd-client.crt',
          'etcd-keyfile': pki ~ '/apiserver-etcd-client.key',
          'etcd-servers': node.kubeadm.etcd_local_url,
          'kubelet-client-certificate': pki ~ '/apiserver-kubelet-client.crt',
          'kubelet-client-key': pki ~ '/apiserver-kubelet-client.key',
          'kubelet-preferred-address-types': 'InternalIP,ExternalIP,Hostname',
          'proxy-client-cert-file': pki ~ '/front-proxy-client.crt',
          'proxy-client-key-file': pki ~ '/front-proxy-client.key',
          'requestheader-allowed-names': 'front-proxy-client',
          'requestheader-client-ca-file': pki ~ '/front-proxy-ca.crt',
          'requestheader-extra-headers-prefix': 'X-Remote-Extra-',
          'requestheader-group-headers': 'X-Remote-Group',
          'requestheader-username-headers': 'X-Remote-User',
          'secure-port': kubernetes.apiserver.secure_port,
          'service-account-issuer': sa.issuer,
          'service-account-key-file': pki ~ '/sa.pub',
          'service-account-signing-key-file': pki ~ '/sa.key',
          'service-cluster-ip-range': kubernetes.service_cluster_ip_range,
          'tls-cert-file': pki ~ '/apiserver.crt',
          'tls-private-key-file': pki ~ '/apiserver.key',
        },
        'controller_manager': {
          'authentication-kubeconfig': dir ~ '/controller-manager.conf',
          'authorization-kubeconfig': dir ~ '/controller-manager.conf',
          'bind-address': '127.0.0.1',
          'client-ca-file': pki ~ '/ca.crt',
          'cluster-name': node.cluster_name,
          'cluster-signing-cert-file': pki ~ '/ca.crt',
          'cluster-signing-key-file': pki ~ '/ca.key',
          'controllers': '*,bootstrapsigner,tokencleaner',
          'kubeconfig': dir ~ '/controller-manager.conf',
          'leader-elect': 'true',
          'requestheader-client-ca-file': pki ~ '/front-proxy-ca.crt',
          'root-ca-file': pki ~ '/ca.crt',
          'secure-port': kubernetes.controller_manager.secure_port,
          'service-account-private-key-file': pki ~ '/sa.key',
          'service-cluster-ip-range': kubernetes.service_cluster_ip_range,
          'use-service-account-credentials': 'true',
        },
        'scheduler': {
          'authentication-kubeconfig': dir ~ '/scheduler.conf',
          'authorization-kubeconfig': dir ~ '/scheduler.conf',
          'bind-address': '127.0.0.1',
          'kubeconfig': dir ~ '/scheduler.conf',
          'leader-elect': 'true',
          'secure-port': kubernetes.scheduler.secure_port,
        },
        'etcd': {
          'advertise-client-urls': node.kubeadm.etcd_client_url,
          'cert-file': pki ~ '/etcd/server.crt',
          'client-cert-auth': 'true',
          'data-dir': etcd.data_dir,
          'initial-advertise-peer-urls': node.kubeadm.etcd_peer_url,
          'initial-cluster': node.kubeadm.etcd_initial_cluster,
          'initial-cluster-state': 'new',
          'key-file': pki ~ '/etcd/server.key',
          'listen-client-urls': [node.kubeadm.etcd_local_url, node.kubeadm.etcd_client_url] | unique | join(','),
          'listen-metrics-urls': 'http://127.0.0.1:' ~ etcd.metrics_port,
          'listen-peer-urls': node.kubeadm.etcd_peer_url,
          'name': node.kubeadm.host,
          'peer-cert-file': pki ~ '/etcd/peer.crt',
          'peer-client-cert-auth': 'true',
          'peer-key-file': pki ~ '/etcd/peer.key',
          'peer-trusted-ca-file': pki ~ '/etcd/ca.crt',
          'snapshot-count': '10000',
          'trusted-ca-file': pki ~ '/etcd/ca.crt',
        },
      } %}
{%-   set certs_mount = {'name': 'k8s-certs', 'path': pki, 'type': 'Directory'} %}
{%-   set pods = {
        'apiserver': {'port': kubernetes.apiserver.secure_port, 'probe': '/livez', 'cpu': '250m',
                      'mounts': [certs_mount]},
        'controller_manager': {'port': kubernetes.controller_manager.secure_port, 'probe': '/healthz',
                               'cpu': '200m', 'mounts': [certs_mount,
                               {'name': 'kubeconfig', 'path': dir ~ '/controller-manager.conf', 'type': 'File'}]},
        'scheduler': {'port': kubernetes.scheduler.secure_port, 'probe': '/healthz', 'cpu': '100m',
                      'mounts': [{'name': 'kubeconfig', 'path': dir ~ '/scheduler.conf', 'type': 'File'}]},
        'etcd': {'port': etcd.metrics_port, 'probe': '/health?exclude=NOSPACE&serializable=true',
                 'scheme': 'HTTP', 'cpu': '100m',
                 'mounts': [{'name': 'etcd-certs', 'path': pki ~ '/etcd', 'type': 'Directory'},
                            {'name': 'etcd-data', 'path': etcd.data_dir, 'type': 'DirectoryOrCreate',
                             'read_only': False}]},
      } %}
{#-   The files each pod reads (relative to the kubeadm folder): its manifest
      waits for their states, and carries the digest of their certificates
      (of a kubeconfig: its client certificate line; never a key). #}
{%-   set reads = {
        'apiserver': ['pki/ca.crt', 'pki/apiserver.crt', 'pki/apiserver.key',
                      'pki/apiserver-kubelet-client.crt', 'pki/apiserver-kubelet-client.key',
                      'pki/apiserver-etcd-client.crt', 'pki/apiserver-etcd-client.key',
                      'pki/etcd/ca.crt', 'pki/front-proxy-ca.crt', 'pki/front-proxy-client.crt',
                      'pki/front-proxy-client.key', 'pki/sa.pub', 'pki/sa.key'],
        'controller_manager': ['controller-manager.conf', 'pki/ca.crt', 'pki/ca.key',
                               'pki/front-proxy-ca.crt', 'pki/sa.key'],
        'scheduler': ['scheduler.conf'],
        'etcd': ['pki/etcd/ca.crt', 'pki/etcd/server.crt', 'pki/etcd/server.key',
                 'pki/etcd/peer.crt', 'pki/etcd/peer.key'],
      } %}
{%-   for component, rels in reads | dictsort %}
{%-     set requires = [layout.validated, {'k8s_certs': 'kubernetes-controlplane-destinations-no-symlinks'}] %}
{%-     set used = [] %}
{%-     for rel in rels if rel.endswith('.crt') and rel in enrolled_files %}
{%-       set member = rel[4:-4] %}
{%-       do pod_enrolled.setdefault(component, []).append((member, dir ~ '/' ~ rel)) %}
{%-     endfor %}
{%-     for rel in rels if rel in given %}
{%-       do requires.append({'file': 'kubernetes-kubeadm-' ~ rel | replace('/', '-') | replace('.', '-') ~ '-file-managed'}) %}
{%-       if rel.endswith('.crt') or rel.endswith('.pub') %}
{%-         do used.append(given[rel]) %}
{%-       elif rel.endswith('.conf') %}
{%-         for line in given[rel].split('\n') if 'client-certificate-data' in line %}
{%-           do used.append(line) %}
{%-         endfor %}
{%-       endif %}
{%-     endfor %}
{%-     do pod_requires.update({component: requires}) %}
{%-     set digest = salt['hashutil.digest'](used | join('\n'), 'sha256') %}
{%-     set annotation = {'kubernetes-formula/certificates-sha256': digest} %}
{%-     do pod_annotations.update({component: annotation}) %}
{%-   endfor %}
{%- endif %}
{%- if node.master %}

kubernetes-controlplane-manifests-dir-file-directory:
  file.directory:
    - name: {{ manifests.dir | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - dir_mode: '{{ manifests.dir_mode }}'
    - makedirs: True
{%-   for component, name in components | dictsort %}
{%-     set merged = salt['slsutil.merge'](flags[component], extra_args[component]) %}
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
        image: {{ (node.kubeadm.etcd_image if component == 'etcd' else node.images[component]) | json }}
        flags: {{ kept | json }}
        port: {{ pods[component].port | json }}
        probe: {{ pods[component].probe | json }}
        scheme: {{ pods[component].get('scheme', 'HTTPS') | json }}
        cpu: {{ pods[component].cpu | json }}
        mounts: {{ pods[component].mounts | json }}
        annotations: {{ pod_annotations[component] | json }}
        digest_files: {{ pod_enrolled.get(component, []) | map('last') | list | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '{{ manifests.mode }}'
    - require:
      - file: kubernetes-controlplane-manifests-dir-file-directory
{%-     for required in pod_requires[component] %}
      - {{ required | json }}
{%-     endfor %}
{%-     for member, _ in pod_enrolled.get(component, []) %}
      - k8s_enroll: {{ enrolled_state | format(member | replace('/', '-')) }}
{%-     endfor %}
{%-   endfor %}
{%- else %}
{#- A node: no control plane, no service-account pair (with kubeadm, the
    kubeconfigs and keys are kubernetes.kubeadm.present's to remove). #}
{%-   set absent = [] %}
{%-   for name in components.values() %}
{%-     do absent.append((name ~ '-manifest', manifests.dir ~ '/' ~ name ~ '.yaml')) %}
{%-   endfor %}
{%-   if node.profile == 'seed' %}
{%-     do absent.extend([
          ('admin-kubeconfig', kubernetes.admin.kubeconfig),
          ('controller-manager-kubeconfig', kubernetes.controller_manager.kubeconfig),
          ('scheduler-kubeconfig', kubernetes.scheduler.kubeconfig),
          ('sa-key', sa.files['sa.key'].path),
          ('sa-pub', sa.files['sa.pub'].path),
        ]) %}
{%-   endif %}
{%-   for id, path in absent %}

kubernetes-controlplane-{{ id }}-file-absent:
  file.absent:
    - name: {{ path | json }}
{%-   endfor %}
{%- endif %}
