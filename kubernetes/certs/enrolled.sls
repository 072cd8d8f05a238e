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
    enrolled client pair: it holds no key and never changes on renewal. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- import_yaml tplroot ~ '/parameters/enrollment.yaml' as enrollment %}
{%- set settings = salt['slsutil.merge'](enrollment['values'], salt['pillar.get']('kubernetes:enrollment', {}), strategy='recurse') %}
{%- set role = salt['pillar.get']('kubernetes:role', 'node') %}
{%- if role not in enrollment.roles %}
{{-   raise('kubernetes:role: ' ~ role ~ ' is not one of ' ~ enrollment.roles | list | join(', ')) }}
{%- endif %}
{%- set members = enrollment.roles[role] %}

{#- A symlink planted at a destination would send a key wherever it points. #}
{%- set destinations = [settings.kubeconfig] %}
{%- for member in members %}
{%-   set paths = enrollment.members[member] %}
{%-   do destinations.extend([paths.cert, paths.key, paths.ca]) %}
{%- endfor %}

kubernetes-certs-enrolled-destinations-no-symlinks:
  k8s_certs.no_symlinks:
    - name: enrolled certificates and keys
    - paths: {{ destinations | unique | list | json }}

{%- for member in members %}
{%-   set paths = enrollment.members[member] %}

kubernetes-certs-enrolled-{{ member | replace('/', '-') }}-certificate-enrolled:
  k8s_enroll.certificate_enrolled:
    - name: {{ paths.cert | json }}
    - key: {{ paths.key | json }}
    - ca: {{ paths.ca | json }}
    - member: {{ member | json }}
    - cluster_tag: {{ settings.cluster_tag | json }}
    - key_type: {{ settings.key_type | json }}
    - renew_before_days: {{ settings.renew_before_days | json }}
    - timeout: {{ settings.timeout | json }}
    - require:
      - k8s_certs: kubernetes-certs-enrolled-destinations-no-symlinks
{%- endfor %}

{%- set client = enrollment.members['kubelet-client'] %}

kubernetes-certs-enrolled-kubelet-kubeconfig-file-managed:
  file.managed:
    - name: {{ settings.kubeconfig | json }}
    - source: salt://{{ tplroot }}/files/kubeconfig.yaml.jinja
    - template: jinja
    - context:
        cluster: {{ settings.cluster_name | json }}
        server: {{ settings.server | json }}
        server_name: {{ settings.server_name | json }}
        ca: {{ client.ca | json }}
        user: kubelet
        cert: {{ client.cert | json }}
        key: {{ client.key | json }}
    - user: root
    - group: root
    - mode: '0600'
    - makedirs: True
    - require:
      - k8s_enroll: kubernetes-certs-enrolled-kubelet-client-certificate-enrolled
