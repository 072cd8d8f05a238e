# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.certs.enrolled: this host's certificates with keys made here.

    For each member its role enrolls (kubernetes/parameters/enrollment.yaml,
    pillar kubernetes:role), k8s_enroll.certificate_enrolled makes a key on
    this host, sends only a CSR to the master (publish.runner ->
    k8s-helper.sign_csr, allowed by the master's peer_run) and lays down the
    key (0600), the certificate and its CA certificate; run again, it
    enrolls anew (new key) once a certificate enters its renewal window.  The
    master decides what each certificate says from its set's record and this
    minion's authenticated id.  No key passes through pillar, the rendered
    SLS, the output or the logs.  Chosen over kubernetes.certs.present by
    pillar kubernetes:certs_mode: enrolled (see docs/enrollment.md).  The
    kubelet's kubeconfig (kubernetes:enrollment:kubeconfig) points at its
    enrolled client pair: it holds no key and never changes on renewal.

    In a seed set (kubernetes:enrollment:profile, see enrollment.yaml) the
    paths are the seed layout's (map.jinja): the kubelet's kubeconfig and CA,
    kube-proxy's kubeconfig (pointing at its own enrolled pair), a master's
    apiserver pair at server.cert/server.key; a master also lays down the
    admin kubecfg pair pillar still hands it. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/certs/enrolled.jinja' import enrolled with context %}
{%- if enrolled.errors %}
{{-   raise(enrolled.errors | join('; ')) }}
{%- endif %}
{%- set settings = enrolled.settings %}
{%- set members = enrolled.members %}
{%- set paths = enrolled.paths %}
{%- set server = enrolled.server %}
{%- set kubeconfigs = enrolled.kubeconfigs %}
{%- set pillar_pairs = enrolled.pillar_pairs %}

{#- A symlink planted at a destination would send a key wherever it points. #}
{%- set destinations = [] %}
{%- for _, path, _ in kubeconfigs %}
{%-   do destinations.append(path) %}
{%- endfor %}
{%- for member in members %}
{%-   do destinations.extend([paths[member].cert, paths[member].key, paths[member].ca]) %}
{%- endfor %}
{%- for _, file, _ in pillar_pairs %}
{%-   do destinations.append(file.path) %}
{%- endfor %}
{%- if enrolled.trust %}
{%-   do destinations.append(enrolled.trust.file.path) %}
{%- endif %}

kubernetes-certs-enrolled-destinations-no-symlinks:
  k8s_certs.no_symlinks:
    - name: enrolled certificates and keys
    - paths: {{ destinations | unique | list | json }}

{%- for member in members %}
{%-   set files = paths[member] %}

kubernetes-certs-enrolled-{{ member | replace('/', '-') }}-certificate-enrolled:
  k8s_enroll.certificate_enrolled:
    - name: {{ files.cert | json }}
    - key: {{ files.key | json }}
    - ca: {{ files.ca | json }}
    - member: {{ member | json }}
    - cluster_tag: {{ settings.cluster_tag | json }}
    - key_type: {{ settings.key_type | json }}
    - renew_before_days: {{ settings.renew_before_days | json }}
    - timeout: {{ settings.timeout | json }}
    - require:
      - k8s_certs: kubernetes-certs-enrolled-destinations-no-symlinks
{%- endfor %}

{%- for id, file, pillar in pillar_pairs %}

{#- The admin pair a seed master still receives through pillar (never a node). #}
kubernetes-certs-enrolled-{{ id | replace('.', '-') }}-pem-managed:
  k8s_certs.pem_managed:
    - name: {{ file.path | json }}
    - source: {{ (pillar ~ ':' ~ file.pillar) | json }}
    - user: root
    - group: root
    - mode: '{{ file.mode }}'
    - makedirs: True
    - require:
      - k8s_certs: kubernetes-certs-enrolled-destinations-no-symlinks
{%- endfor %}

{%- for user, path, member in kubeconfigs %}
{%-   set client = paths[member] %}

kubernetes-certs-enrolled-{{ user }}-kubeconfig-file-managed:
  file.managed:
    - name: {{ path | json }}
    - source: salt://{{ tplroot }}/files/kubeconfig.yaml.jinja
    - template: jinja
    - context:
        cluster: {{ server.cluster_name | json }}
        server: {{ server.server | json }}
        server_name: {{ server.server_name | json }}
        ca: {{ client.ca | json }}
        user: {{ user | json }}
        cert: {{ client.cert | json }}
        key: {{ client.key | json }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - require:
      - k8s_enroll: kubernetes-certs-enrolled-{{ member }}-certificate-enrolled
{%- endfor %}
{%- set trust = enrolled.trust %}
{%- if trust %}

kubernetes-certs-enrolled-trust-anchor-pem-managed:
  k8s_certs.pem_managed:
    - name: {{ trust.file.path | json }}
    - source: {{ (trust.pillar ~ ':' ~ trust.file.pillar) | json }}
    - user: root
    - group: root
    - mode: '{{ trust.file.mode }}'
    - makedirs: True
    - require:
      - k8s_certs: kubernetes-certs-enrolled-destinations-no-symlinks

kubernetes-certs-enrolled-trust-store-trusted:
  k8s_certs.trusted:
    - name: {{ trust.anchor | json }}
    - bundle: {{ trust.bundle | json }}
    - refresh: {{ trust.refresh | json }}
    - require:
      - k8s_certs: kubernetes-certs-enrolled-trust-anchor-pem-managed

kubernetes-certs-enrolled-trust-link-file-symlink:
  file.symlink:
    - name: {{ trust.link | json }}
    - target: {{ trust.anchor | json }}
    - user: root
    - group: root
    - require:
      - k8s_certs: kubernetes-certs-enrolled-trust-store-trusted
{%- endif %}
