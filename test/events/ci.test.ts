import { describe, expect, it } from 'vitest';
import { ciContext, parseEnvTxt, parseTraceParent } from '../../src/events/ci.js';

const env = (entries: Record<string, string>) => new Map(Object.entries(entries));

describe('parseTraceParent', () => {
  it('reads a W3C traceparent and refuses invalid ones', () => {
    expect(parseTraceParent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')).toEqual({
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      sampled: true,
    });
    expect(parseTraceParent(' 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00 ')?.sampled).toBe(
      false,
    );
    for (const bad of [
      undefined,
      '',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7',
    ]) {
      expect(parseTraceParent(bad), String(bad)).toBeUndefined();
    }
  });
});

describe('parseEnvTxt', () => {
  // The shape of a pyATS 23.2 env.txt, trimmed (test/integration/real-pyats.test.ts reads a whole real one).
  const text = [
    'Runtime Values',
    '==============',
    "{'argv': {'all': 'easypy job.py --no-mail',",
    "          'custom': ('--no-mail',)},",
    " 'user': 'root'}",
    '',
    'Environment Variables',
    '=====================',
    'DEBIAN_FRONTEND          : noninteractive',
    'TRACEPARENT              : 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    'LANG                     : C.UTF-8',
    'GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: /etc/ssl/certs/ca-certificates.crt',
    '',
    '',
    'Pip Installed Packages',
    '======================',
    'GitPython                          3.1.31    /tmp/site-packages',
  ].join('\n');

  it('reads the Environment Variables section of an easypy env.txt', () => {
    const vars = parseEnvTxt(text);
    expect(vars.get('GRPC_DEFAULT_SSL_ROOTS_FILE_PATH')).toBe('/etc/ssl/certs/ca-certificates.crt');
    expect(vars.has('GitPython')).toBe(false);
    expect(vars.get('LANG')).toBe('C.UTF-8');
    expect(vars.get('DEBIAN_FRONTEND')).toBe('noninteractive');
    expect(vars.get('TRACEPARENT')).toBe('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
    // Runtime values above the section are not variables.
    expect(vars.has('argv')).toBe(false);
  });

  it('gives nothing for a text without the section', () => {
    expect(parseEnvTxt('Runtime Values\n==============\n{}\n').size).toBe(0);
  });
});

describe('ciContext', () => {
  it('describes a GitHub Actions run', () => {
    expect(
      ciContext(
        env({
          GITHUB_ACTIONS: 'true',
          GITHUB_WORKFLOW: 'nightly-bgp',
          GITHUB_RUN_ID: '9876',
          GITHUB_RUN_ATTEMPT: '2',
          GITHUB_REPOSITORY: 'lab/tests',
          GITHUB_SERVER_URL: 'https://github.example.com',
        }),
      ),
    ).toEqual({
      system: 'github_actions',
      pipelineName: 'nightly-bgp',
      runId: '9876',
      taskRunUrl: 'https://github.example.com/lab/tests/actions/runs/9876/attempts/2',
    });
  });

  it('describes a GitLab CI and a Jenkins run, with the CI span as parent', () => {
    expect(
      ciContext(
        env({
          GITLAB_CI: 'true',
          CI_PROJECT_PATH: 'lab/tests',
          CI_PIPELINE_ID: '42',
          CI_JOB_URL: 'https://gitlab.example.com/lab/tests/-/jobs/7',
          TRACEPARENT: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        }),
      ),
    ).toEqual({
      system: 'gitlab_ci',
      pipelineName: 'lab/tests',
      runId: '42',
      taskRunUrl: 'https://gitlab.example.com/lab/tests/-/jobs/7',
      parent: { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: true },
    });
    expect(
      ciContext(
        env({
          JENKINS_URL: 'https://ci/',
          JOB_NAME: 'bgp/main',
          BUILD_NUMBER: '311',
          BUILD_URL: 'https://ci/job/bgp/311/',
        }),
      ),
    ).toEqual({
      system: 'jenkins',
      pipelineName: 'bgp/main',
      runId: '311',
      taskRunUrl: 'https://ci/job/bgp/311/',
    });
  });

  it('is undefined outside CI', () => {
    expect(ciContext(env({ HOME: '/root', TRACEPARENT: 'garbage' }))).toBeUndefined();
  });
});
